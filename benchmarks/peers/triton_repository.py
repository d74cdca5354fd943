"""One workload as a Triton python-backend model repository: config.pbtxt and model.py.

The same folder is served by Triton's own server (``triton_server.py``) and by servekit
(``servekit_peer.ServekitTritonRepoPeer``), so the two differ only in the server: the same
``config.pbtxt`` (dynamic batching max 32 / 10 ms, one CPU instance), the same ``model.py``,
which runs ``model_fn.Model.predict`` once per batch, as every other peer does::

    <root>/<workload>/config.pbtxt
    <root>/<workload>/1/model.py
    <root>/<workload>/1/model_fn.py      (a copy of peers/model_fn.py)

``execute`` gets the requests of one batch (Triton's dynamic batcher, or servekit's, hands
them over together), concatenates their inputs, predicts once and splits the outputs back
per request. An output with no dimension per row (W1's ``label``) is declared ``dims: [1]``,
as Triton needs at least one dimension besides the batch.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from peers.base import MAX_BATCH_DELAY_MS, MAX_BATCH_SIZE, MODEL_FN, TensorSpec, Workload

__all__ = ["write_python_repository"]

_TRITON_TYPES = {"FP32": "TYPE_FP32", "FP64": "TYPE_FP64", "INT64": "TYPE_INT64", "INT32": "TYPE_INT32"}

# Filled in with str.format: the workload folder model_fn reads, and each output's row shape.
MODEL_PY = '''\
"""A Triton python-backend model over model_fn (written by benchmarks/peers/triton_repository.py)."""

import importlib.util
import os

import numpy as np
import triton_python_backend_utils as pb_utils

WORKLOAD = {folder!r}
OUTPUTS = {outputs!r}  # name, one row's shape as declared in config.pbtxt


class TritonPythonModel:
    def initialize(self, args):
        here = os.path.join(args["model_repository"], args["model_version"])
        spec = importlib.util.spec_from_file_location("model_fn", os.path.join(here, "model_fn.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        self.model = module.Model(WORKLOAD)

    def execute(self, requests):
        names = self.model.input_names
        parts = [[pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in names]
                 for request in requests]
        if len(parts) == 1:
            batch = dict(zip(names, parts[0]))
        else:
            batch = {{name: np.concatenate([p[i] for p in parts]) for i, name in enumerate(names)}}
        outputs = self.model.predict(batch)
        responses = []
        start = 0
        for request_inputs in parts:
            rows = len(request_inputs[0])
            tensors = [pb_utils.Tensor(name, np.ascontiguousarray(outputs[name][start:start + rows]).reshape(
                           rows, *shape)) for name, shape in OUTPUTS]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += rows
        return responses
'''


def _tensors(specs: tuple[TensorSpec, ...]) -> str:
    return ",\n".join(
        f'  {{ name: "{spec.name}" data_type: {_TRITON_TYPES[spec.datatype]} dims: '
        f'[ {", ".join(str(d) for d in (spec.shape or (1,)))} ] }}'
        for spec in specs
    )


def write_python_repository(workload: Workload, root: Path, parameters: dict[str, str] | None = None) -> Path:
    """Write ``root/<workload.name>/`` (config.pbtxt, 1/model.py, 1/model_fn.py); returns ``root``.
    ``parameters``: config.pbtxt parameters (string values) to add, e.g. servekit's own knobs."""
    model_dir = root / workload.name
    (model_dir / "1").mkdir(parents=True)
    shutil.copy(MODEL_FN, model_dir / "1" / "model_fn.py")
    outputs = [(spec.name, list(spec.shape or (1,))) for spec in workload.outputs]
    (model_dir / "1" / "model.py").write_text(MODEL_PY.format(folder=str(workload.folder), outputs=outputs))
    (model_dir / "config.pbtxt").write_text(
        f'name: "{workload.name}"\n'
        'backend: "python"\n'
        f"max_batch_size: {MAX_BATCH_SIZE}\n"
        f"input [\n{_tensors(workload.inputs)}\n]\n"
        f"output [\n{_tensors(workload.outputs)}\n]\n"
        f"dynamic_batching {{ max_queue_delay_microseconds: {MAX_BATCH_DELAY_MS * 1000} }}\n"
        "instance_group [ { count: 1 kind: KIND_CPU } ]\n"
        + "".join(f'parameters: {{ key: "{key}" value: {{ string_value: "{value}" }} }}\n'
                  for key, value in (parameters or {}).items())
    )
    return root
