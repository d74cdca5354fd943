"""A Triton model repository for the end-to-end tests, written in code (config.pbtxt layout).

- ``pybatch``: python backend, max_batch_size 8, dynamic batching; ``execute`` sleeps a while so
  concurrent requests gather, appends the number of requests of each call to a marker file,
  answers ``Y = 2 * X`` and ``PARAMS`` (the request's parameters() text), and answers a request
  holding 13 with ``TritonError(INVALID_ARG)``.
- ``pyfull``: python backend, max_batch_size 0 (full shapes): ``Y = X + OFFSET`` for an INT32 [2, 3],
  OFFSET an optional input (1 when left out).
- ``pyplain``: python backend, max_batch_size 4 without dynamic_batching (Triton's default
  scheduler: each request runs alone): ``Y = 2 * X``.
- ``onnx_policy``: platform onnxruntime_onnx, versions 1-3 on disk, version_policy specific [1, 3].
- ``libtorch``: platform pytorch_libtorch (TorchScript ``model.pt``), ``OUTPUT__0 = INPUT__0 +
  10 * INPUT__1``, the inputs listed out of order in the config (Triton orders them by index).
"""

from __future__ import annotations

import textwrap
import warnings
from pathlib import Path

from tests.builders import write_onnx_model

__all__ = ["build_triton_repository"]

PYBATCH_CONFIG = """
name: "pybatch"
backend: "python"
max_batch_size: 8
input [ { name: "X" data_type: TYPE_FP32 dims: [ 1 ] } ]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ 1 ] }, { name: "PARAMS" data_type: TYPE_STRING dims: [ 1 ] } ]
instance_group [ { count: 1 kind: KIND_CPU } ]
dynamic_batching { max_queue_delay_microseconds: 200000 }
parameters: { key: "marker" value: { string_value: "MARKER" } }
"""

PYBATCH_MODEL = '''
import json
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.marker = json.loads(args["model_config"])["parameters"]["marker"]["string_value"]

    def execute(self, requests):
        with open(self.marker, "a", encoding="utf-8") as f:
            f.write(f"{len(requests)}\\n")
        time.sleep(0.2)
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            if np.any(x == 13):
                error = pb_utils.TritonError("13 is refused", pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
                continue
            params = np.array([[request.parameters().encode()]] * len(x), dtype=np.object_)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", x * 2),
                                                         pb_utils.Tensor("PARAMS", params)]))
        return responses
'''

PYFULL_CONFIG = """
backend: "python"
max_batch_size: 0
input [ { name: "X" data_type: TYPE_INT32 dims: [ 2, 3 ] },
        { name: "OFFSET" data_type: TYPE_INT32 dims: [ 1 ] optional: true } ]
output [ { name: "Y" data_type: TYPE_INT32 dims: [ 2, 3 ] } ]
"""

PYFULL_MODEL = '''
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            offset = pb_utils.get_input_tensor_by_name(request, "OFFSET")
            extra = 1 if offset is None else int(offset.as_numpy()[0])
            y = pb_utils.get_input_tensor_by_name(request, "X").as_numpy() + extra
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", y)]))
        return responses
'''

PYPLAIN_CONFIG = """
backend: "python"
max_batch_size: 4
input [ { name: "X" data_type: TYPE_FP32 dims: [ 2 ] } ]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ 2 ] } ]
"""

PYPLAIN_MODEL = '''
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        doubled = [pb_utils.get_input_tensor_by_name(r, "X").as_numpy() * 2 for r in requests]
        return [pb_utils.InferenceResponse([pb_utils.Tensor("Y", y)]) for y in doubled]
'''

ONNX_CONFIG = """
platform: "onnxruntime_onnx"
max_batch_size: 16
version_policy: { specific: { versions: [ 1, 3 ] } }
input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 3 ] }, { name: "label" data_type: TYPE_INT64 dims: [ ] } ]
dynamic_batching { }
"""

LIBTORCH_CONFIG = """
platform: "pytorch_libtorch"
max_batch_size: 4
input [ { name: "INPUT__1" data_type: TYPE_FP32 dims: [ 2 ] }, { name: "INPUT__0" data_type: TYPE_FP32 dims: [ 2 ] } ]
output [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 2 ] } ]
"""


def _write(model_dir: Path, config: str, files: dict[str, str] | None = None) -> Path:
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.pbtxt").write_text(textwrap.dedent(config), encoding="utf-8")
    for relative, text in (files or {}).items():
        (model_dir / relative).parent.mkdir(parents=True, exist_ok=True)
        (model_dir / relative).write_text(textwrap.dedent(text), encoding="utf-8")
    return model_dir


def _write_libtorch(model_dir: Path) -> None:
    import torch

    class WeightedSum(torch.nn.Module):
        def forward(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
            return first + 10 * second

    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # TorchScript is deprecated upstream; Triton's libtorch models are TorchScript
        warnings.simplefilter("ignore", DeprecationWarning)
        example = (torch.zeros(1, 2), torch.zeros(1, 2))
        torch.jit.save(torch.jit.trace(WeightedSum(), example), str(model_dir / "1" / "model.pt"))


def build_triton_repository(root: Path, marker: Path) -> Path:
    """The five models above under ``root``; ``marker`` collects pybatch's execute sizes."""
    _write(root / "pybatch", PYBATCH_CONFIG.replace("MARKER", str(marker)), {"1/model.py": PYBATCH_MODEL})
    _write(root / "pyfull", PYFULL_CONFIG, {"1/model.py": PYFULL_MODEL})
    _write(root / "pyplain", PYPLAIN_CONFIG, {"1/model.py": PYPLAIN_MODEL})
    _write(root / "onnx_policy", ONNX_CONFIG)
    for version in (1, 2, 3):
        write_onnx_model(root / "onnx_policy" / str(version))
    _write(root / "libtorch", LIBTORCH_CONFIG)
    _write_libtorch(root / "libtorch")
    return root
