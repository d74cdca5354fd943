"""A Triton model folder on disk: config.pbtxt found by servekit's repository, auto-complete, loading."""

from __future__ import annotations

import asyncio
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

from servekit.errors import ConfigError
from servekit.formats.triton.repository import read_triton_config
from servekit.serving.entry import read_model_config
from servekit.serving.version import load_version
from tests.builders import WEIGHTS, write_onnx_model

ONNX_CONFIG = """
name: "linear"
platform: "onnxruntime_onnx"
max_batch_size: 8
version_policy: { specific: { versions: [ 2 ] } }
input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 3 ] }, { name: "label" data_type: TYPE_INT64 dims: [ ] } ]
"""


def _write(model_dir: Path, config: str, versions: tuple[int, ...] = (1, 2)) -> Path:
    for version in versions:
        write_onnx_model(model_dir / str(version))
    (model_dir / "config.pbtxt").write_text(textwrap.dedent(config))
    return model_dir


def test_a_folder_with_numbered_versions_and_config_pbtxt_is_read_by_the_repository(tmp_path: Path) -> None:
    model_dir = _write(tmp_path / "linear", ONNX_CONFIG)
    config = read_model_config(model_dir)
    assert config.runtime == "onnx" and config.version_policy.specific == [2] and config.max_batch_size == 8


def test_both_config_files_is_an_error_that_says_so(tmp_path: Path) -> None:
    model_dir = _write(tmp_path / "linear", ONNX_CONFIG)
    (model_dir / "config.yaml").write_text("max_batch_size: 4\n")
    with pytest.raises(ConfigError, match=r"has config.yaml and config.pbtxt: servekit reads one config per model"):
        read_model_config(model_dir)


def test_the_onnx_model_loads_through_servekits_onnx_runtime(tmp_path: Path) -> None:
    model_dir = _write(tmp_path / "linear", ONNX_CONFIG)
    (model_dir / "2" / "model.onnx").rename(model_dir / "2" / "weights.onnx")
    (model_dir / "2" / "other.onnx").write_bytes((model_dir / "1" / "model.onnx").read_bytes())
    config = read_model_config(model_dir).model_copy(update={"model_file": "weights.onnx"})
    version = load_version("linear", model_dir, 2, config)

    async def infer() -> dict[str, np.ndarray]:  # type: ignore[type-arg]
        try:
            return await version.batcher.submit({"x": np.ones((2, 4), dtype=np.float32)})
        finally:
            await version.batcher.close()

    outputs = asyncio.run(infer())
    assert version.platform == "onnxruntime_onnx" and version.max_batch_size == 8
    assert [(s.name, s.shape) for s in version.inputs] == [("x", (-1, 4))]
    np.testing.assert_allclose(outputs["y"], np.ones((2, 4), dtype=np.float32) @ WEIGHTS, rtol=1e-6)


PYTHON_CONFIG = 'backend: "python"\n'

AUTO_COMPLETE_MODEL = '''
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    @staticmethod
    def auto_complete_config(auto_complete_model_config):
        auto_complete_model_config.add_input({"name": "IN", "data_type": "TYPE_FP32", "dims": [3]})
        auto_complete_model_config.add_output({"name": "OUT", "data_type": "TYPE_FP32", "dims": [3]})
        auto_complete_model_config.set_max_batch_size(4)
        auto_complete_model_config.set_dynamic_batching()
        return auto_complete_model_config

    def execute(self, requests):
        inputs = [pb_utils.get_input_tensor_by_name(r, "IN").as_numpy() for r in requests]
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUT", x)]) for x in inputs]
'''


def test_auto_complete_config_runs_when_the_config_is_read(tmp_path: Path) -> None:
    model_dir = tmp_path / "auto"
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text(PYTHON_CONFIG)
    (model_dir / "1" / "model.py").write_text(AUTO_COMPLETE_MODEL)
    config = read_triton_config(model_dir)
    assert [(t.name, t.shape) for t in config.inputs or []] == [("IN", [-1, 3])]
    assert config.max_batch_size == 4 and config.batching.enabled is True


def test_a_model_without_auto_complete_is_not_imported_to_read_its_config(tmp_path: Path) -> None:
    model_dir = tmp_path / "plain"
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text(PYTHON_CONFIG + 'max_batch_size: 2\n')
    (model_dir / "1" / "model.py").write_text("raise SystemExit('imported!')\nclass TritonPythonModel: pass\n")
    assert read_triton_config(model_dir).max_batch_size == 2


THREAD_MODEL = '''
import threading

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        name = np.array([[threading.current_thread().name.encode()]], dtype=np.object_)
        return [pb_utils.InferenceResponse([pb_utils.Tensor("THREAD", name)]) for _ in requests]
'''


def _execution_parameter_from_the_docs() -> str:
    page = (Path(__file__).resolve().parents[3] / "docs" / "triton.md").read_text()
    return next(line for line in page.splitlines() if "servekit.execution" in line and line.startswith("parameters"))


@pytest.mark.parametrize("parameter", ["", "docs"])
def test_a_python_model_runs_inline_only_when_its_config_pbtxt_says_so(tmp_path: Path, parameter: str) -> None:
    model_dir = tmp_path / "where"
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text(
        'backend: "python"\nmax_batch_size: 4\ndynamic_batching { }\n'
        'input [ { name: "X" data_type: TYPE_FP32 dims: [ 1 ] } ]\n'
        'output [ { name: "THREAD" data_type: TYPE_STRING dims: [ 1 ] } ]\n'
        + (_execution_parameter_from_the_docs() + "\n" if parameter else ""))
    (model_dir / "1" / "model.py").write_text(THREAD_MODEL)
    version = load_version("where", model_dir, 1, read_model_config(model_dir))

    async def ask() -> tuple[str, str]:
        try:
            outputs = await version.batcher.submit({"X": np.ones((1, 1), dtype=np.float32)})
            return outputs["THREAD"][0][0].decode(), threading.current_thread().name
        finally:
            await version.batcher.close()

    ran_on, loop_thread = asyncio.run(ask())
    assert version.batcher.inline is bool(parameter)
    assert (ran_on == loop_thread) is bool(parameter)  # inline: on the event loop's own thread
