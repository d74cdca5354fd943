"""TorchScript and torch.export runtimes: signatures, output mapping, dynamic batch."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from servekit.config import ModelConfig, TensorConfig
from servekit.errors import ConfigError, InvalidInput, ModelFailed
from servekit.runtimes import Runtime, RuntimeContext, create_runtime
from servekit.types import TensorSpec
from tests.conftest import TORCH_INSTALL, require_module

if TYPE_CHECKING:
    import torch
else:
    torch = require_module("torch", TORCH_INSTALL)


class Scorer(torch.nn.Module):
    """Two inputs (float features, int64 weights), a dict of two outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, features: torch.Tensor, weights: torch.Tensor) -> dict[str, torch.Tensor]:
        scores = self.linear(features) * weights.unsqueeze(1).to(features.dtype)
        return {"scores": scores, "best": scores.argmax(dim=1)}


class Pair(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x * 2, x.sum(dim=1)


class Double(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


def _runtime(name: str, model_dir: Path, config: ModelConfig) -> Runtime:
    context = RuntimeContext("m", 1, model_dir, model_dir / "1", config=config)
    runtime = create_runtime(name, context)
    runtime.load()
    return runtime


def _save_script(module: torch.nn.Module, model_dir: Path, file_name: str = "model.pt") -> None:
    (model_dir / "1").mkdir(parents=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(module), str(model_dir / "1" / file_name))


def _save_export(module: torch.nn.Module, example: tuple[torch.Tensor, ...], model_dir: Path, dynamic: bool) -> None:
    (model_dir / "1").mkdir(parents=True)
    batch = torch.export.Dim("batch", min=1, max=1024)
    names = ["features", "weights"][: len(example)] if isinstance(module, Scorer) else ["x"]
    shapes = {name: {0: batch} for name in names} if dynamic else None
    program = torch.export.export(module, example, dynamic_shapes=shapes)
    torch.export.save(program, str(model_dir / "1" / "model.pt2"))


def _tensors(*specs: tuple[str, str, list[int]]) -> list[TensorConfig]:
    return [TensorConfig(name=name, datatype=datatype, shape=shape) for name, datatype, shape in specs]


SCORER_INPUTS = _tensors(("features", "FP32", [-1, 4]), ("weights", "INT64", [-1]))
SCORER_OUTPUTS = _tensors(("scores", "FP32", [-1, 3]), ("best", "INT64", [-1]))


def _scorer_example(rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(rows, 4), torch.arange(rows, dtype=torch.int64) + 1


def test_export_signature_comes_from_the_program(tmp_path: Path) -> None:
    _save_export(Scorer(), _scorer_example(3), tmp_path, dynamic=True)
    signature = _runtime("torch_export", tmp_path, ModelConfig(device="cpu")).signature()
    assert signature is not None
    assert signature.inputs == (TensorSpec("features", "FP32", (-1, 4)), TensorSpec("weights", "INT64", (-1,)))
    # A dict-returning program names its outputs by its keys.
    assert signature.outputs == (TensorSpec("scores", "FP32", (-1, 3)), TensorSpec("best", "INT64", (-1,)))


def test_export_static_shapes_stay_static_and_tuple_outputs_get_default_names(tmp_path: Path) -> None:
    _save_export(Pair(), (torch.randn(2, 5),), tmp_path, dynamic=False)
    signature = _runtime("torch_export", tmp_path, ModelConfig()).signature()
    assert signature is not None
    assert signature.inputs == (TensorSpec("x", "FP32", (2, 5)),)
    assert signature.outputs == (TensorSpec("output_0", "FP32", (2, 5)), TensorSpec("output_1", "FP32", (2,)))


def test_export_tuple_outputs_take_config_names(tmp_path: Path) -> None:
    _save_export(Pair(), (torch.randn(2, 5),), tmp_path, dynamic=True)
    config = ModelConfig(outputs=_tensors(("doubled", "FP32", [-1, 5]), ("total", "FP32", [-1])))
    runtime = _runtime("torch_export", tmp_path, config)
    signature = runtime.signature()
    assert signature is not None
    assert [spec.name for spec in signature.outputs] == ["doubled", "total"]
    x = np.arange(15, dtype=np.float32).reshape(3, 5)
    outputs = runtime.predict({"x": x})
    np.testing.assert_allclose(outputs["doubled"], x * 2)
    np.testing.assert_allclose(outputs["total"], x.sum(axis=1))


@pytest.mark.parametrize("rows", [1, 7, 64])
def test_export_dynamic_batch_runs_any_batch_size(tmp_path: Path, rows: int) -> None:
    module = Scorer()
    _save_export(module, _scorer_example(3), tmp_path, dynamic=True)
    runtime = _runtime("torch_export", tmp_path, ModelConfig())
    features, weights = _scorer_example(rows)
    outputs = runtime.predict({"weights": weights.numpy(), "features": features.numpy()})
    with torch.no_grad():
        expected = module(features, weights)
    assert outputs["scores"].shape == (rows, 3) and outputs["scores"].dtype == np.float32
    assert outputs["best"].shape == (rows,) and outputs["best"].dtype == np.int64
    np.testing.assert_allclose(outputs["scores"], expected["scores"].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(outputs["best"], expected["best"].numpy())


def test_torchscript_needs_declared_tensors(tmp_path: Path) -> None:
    _save_script(Double(), tmp_path)
    with pytest.raises(ConfigError, match="cannot describe its own tensors; declare 'inputs'"):
        _runtime("torchscript", tmp_path, ModelConfig())


def test_torchscript_outputs_left_out_are_learnt_from_one_run_on_zeros(tmp_path: Path) -> None:
    _save_script(Scorer(), tmp_path / "scorer")
    runtime = _runtime("torchscript", tmp_path / "scorer", ModelConfig(inputs=SCORER_INPUTS))
    signature = runtime.signature()
    assert signature is not None and signature.inputs == tuple(t.spec() for t in SCORER_INPUTS)
    assert signature.outputs == (TensorSpec("scores", "FP32", (-1, 3)), TensorSpec("best", "INT64", (-1,)))
    features, weights = _scorer_example(3)
    assert runtime.predict({"features": features.numpy(), "weights": weights.numpy()})["scores"].shape == (3, 3)

    _save_script(Pair(), tmp_path / "pair")
    pair = _runtime("torchscript", tmp_path / "pair", ModelConfig(inputs=_tensors(("x", "FP64", [-1, 2]))))
    assert pair.signature().outputs == (TensorSpec("output_0", "FP64", (-1, 2)),  # type: ignore[union-attr]
                                        TensorSpec("output_1", "FP64", (-1,)))
    assert set(pair.predict({"x": np.ones((4, 2))})) == {"output_0", "output_1"}

    _save_script(Double(), tmp_path / "double")
    varying = _runtime("torchscript", tmp_path / "double", ModelConfig(inputs=_tensors(("x", "FP32", [-1, -1]))))
    assert varying.signature().outputs == (TensorSpec("output", "FP32", (-1, -1)),)  # type: ignore[union-attr]
    fixed = ModelConfig(inputs=_tensors(("x", "FP32", [1, 2])), max_batch_size=0)
    assert _runtime("torchscript", tmp_path / "double", fixed).signature().outputs == (  # type: ignore[union-attr]
        TensorSpec("output", "FP32", (1, 2)),)


def test_torchscript_that_fails_on_zeros_asks_for_its_outputs(tmp_path: Path) -> None:
    _save_script(Scorer(), tmp_path)
    wrong_width = _tensors(("features", "FP32", [-1, 5]), ("weights", "INT64", [-1]))
    with pytest.raises(ConfigError, match=r"one run on zeros shaped as the declared inputs failed \(.*\); "
                                          "declare 'outputs'"):
        _runtime("torchscript", tmp_path, ModelConfig(inputs=wrong_width))


def test_torchscript_dict_output_maps_by_key(tmp_path: Path) -> None:
    module = Scorer()
    _save_script(module, tmp_path)
    runtime = _runtime("torchscript", tmp_path, ModelConfig(inputs=SCORER_INPUTS, outputs=SCORER_OUTPUTS))
    assert runtime.signature() is None
    features, weights = _scorer_example(4)
    outputs = runtime.predict({"features": features.numpy(), "weights": weights.numpy()})
    with torch.no_grad():
        expected = module(features, weights)
    assert set(outputs) == {"scores", "best"}
    np.testing.assert_allclose(outputs["scores"], expected["scores"].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(outputs["best"], expected["best"].numpy())


def test_torchscript_single_tensor_maps_to_first_declared_output(tmp_path: Path) -> None:
    _save_script(Double(), tmp_path, file_name="double.torchscript")
    config = ModelConfig(inputs=_tensors(("x", "FP64", [-1, 2])), outputs=_tensors(("twice", "FP64", [-1, 2])))
    x = np.array([[1.0, 2.0], [3.0, 4.0]])
    x.flags.writeable = False  # decoded request bodies are often read-only buffers
    outputs = _runtime("torchscript", tmp_path, config).predict({"x": x})
    assert list(outputs) == ["twice"]
    assert outputs["twice"].dtype == np.float64
    np.testing.assert_array_equal(outputs["twice"], x * 2)


def test_torchscript_tuple_output_count_must_match_declared_outputs(tmp_path: Path) -> None:
    _save_script(Pair(), tmp_path)
    config = ModelConfig(inputs=_tensors(("x", "FP32", [-1, 2])), outputs=_tensors(("only", "FP32", [-1, 2])))
    runtime = _runtime("torchscript", tmp_path, config)
    with pytest.raises(ModelFailed, match="returned 2 outputs but 1 are declared"):
        runtime.predict({"x": np.ones((1, 2), dtype=np.float32)})


def test_bytes_is_refused_in_config_and_in_requests(tmp_path: Path) -> None:
    _save_script(Double(), tmp_path)
    with pytest.raises(ConfigError, match="'text' is BYTES"):
        config = ModelConfig(inputs=_tensors(("text", "BYTES", [-1])), outputs=_tensors(("y", "FP32", [-1])))
        _runtime("torchscript", tmp_path, config)
    config = ModelConfig(inputs=_tensors(("x", "FP32", [-1])), outputs=_tensors(("y", "FP32", [-1])))
    runtime = _runtime("torchscript", tmp_path, config)
    with pytest.raises(InvalidInput, match="'x' is BYTES"):
        runtime.predict({"x": np.array([b"a"], dtype=object)})
    with pytest.raises(InvalidInput, match="missing input"):
        runtime.predict({"y": np.ones(1, dtype=np.float32)})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on machines without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error(tmp_path: Path) -> None:
    _save_script(Double(), tmp_path)
    config = ModelConfig(device="cuda", inputs=_tensors(("x", "FP32", [-1])), outputs=_tensors(("y", "FP32", [-1])))
    with pytest.raises(RuntimeError, match="no CUDA device is available"):
        _runtime("torchscript", tmp_path, config)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("runtime_name", ["torchscript", "torch_export"])
def test_cuda_runs_on_the_gpu_and_returns_cpu_numpy(tmp_path: Path, runtime_name: str) -> None:
    module = Scorer()
    if runtime_name == "torchscript":
        _save_script(module, tmp_path)
    else:
        _save_export(module, _scorer_example(3), tmp_path, dynamic=True)
    config = ModelConfig(device="cuda", inputs=SCORER_INPUTS, outputs=SCORER_OUTPUTS)
    runtime = _runtime(runtime_name, tmp_path, config)
    assert runtime.device == "cuda:0"
    features, weights = _scorer_example(5)
    outputs = runtime.predict({"features": features.numpy(), "weights": weights.numpy()})
    with torch.no_grad():
        expected = module(features, weights)
    np.testing.assert_allclose(outputs["scores"], expected["scores"].numpy(), rtol=1e-4, atol=1e-5)
    runtime.unload()


def test_export_feeds_the_program_order_whatever_the_config_order(tmp_path: Path) -> None:
    module = Scorer()
    _save_export(module, _scorer_example(3), tmp_path, dynamic=True)
    reordered = ModelConfig(inputs=[SCORER_INPUTS[1], SCORER_INPUTS[0]])
    features, weights = _scorer_example(4)
    outputs = _runtime("torch_export", tmp_path, reordered).predict(
        {"features": features.numpy(), "weights": weights.numpy()}
    )
    with torch.no_grad():
        np.testing.assert_allclose(outputs["scores"], module(features, weights)["scores"].numpy(), rtol=1e-5)
    renamed = ModelConfig(inputs=_tensors(("pixels", "FP32", [-1, 4]), ("weights", "INT64", [-1])))
    with pytest.raises(ConfigError, match="differ from the model's"):
        _runtime("torch_export", tmp_path, renamed)
