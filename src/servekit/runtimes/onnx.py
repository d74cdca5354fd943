"""ONNX Runtime: CPU by default, CUDA when asked for (or 'auto') and present.

On CUDA, each instance's session runs on the GPU its placement gives it (servekit.runtimes.placement),
passed to the CUDA execution provider as its ``device_id``. ONNX Runtime cannot count GPUs, so an
index past the last GPU is refused by the provider when the session is made.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort

from servekit.runtimes.base import Arrays, Runtime, Signature, find_file
from servekit.runtimes.placement import device_index, place_instance
from servekit.types import TensorSpec

__all__ = ["OnnxRuntime"]

_ORT_TYPES = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}

_OPT_LEVELS = {
    "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def _spec(arg: Any) -> TensorSpec:
    datatype = _ORT_TYPES.get(arg.type)
    if datatype is None:
        raise RuntimeError(f"onnx tensor {arg.name!r} has type {arg.type}, which servekit cannot serve")
    shape = tuple(d if isinstance(d, int) and d > 0 else -1 for d in (arg.shape or []))
    return TensorSpec(arg.name, datatype, shape)


def _decode(array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """BYTES (object array of bytes) -> the str array onnxruntime wants for string tensors."""
    flat = [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in array.reshape(-1)]
    return np.array(flat, dtype=object).reshape(array.shape)


def _encode(array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    flat = [x.encode() if isinstance(x, str) else bytes(x) for x in array.reshape(-1)]
    return np.array(flat, dtype=object).reshape(array.shape)


class OnnxRuntime(Runtime):
    platform = "onnxruntime_onnx"

    def load(self) -> None:
        cuda = "CUDAExecutionProvider" in ort.get_available_providers()
        self.device = place_instance(self.context.config.device, self.context.instance, None if cuda else 0)
        self._session = self._new_session(self.context.config.onnx.intra_op_threads)
        self._inputs = tuple(_spec(arg) for arg in self._session.get_inputs())
        self._outputs = tuple(_spec(arg) for arg in self._session.get_outputs())
        self._output_names = [spec.name for spec in self._outputs]
        self._strings = {spec.name for spec in self._inputs if spec.datatype == "BYTES"}

    def _new_session(self, intra_op_threads: int) -> ort.InferenceSession:
        settings = self.context.config.onnx
        path = find_file(self.context.version_dir, (".onnx",), self.context.config.model_file)
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = settings.inter_op_threads
        options.graph_optimization_level = _OPT_LEVELS[settings.graph_optimization]
        providers = settings.providers or cuda_providers(self.device)
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)

    def run_inline(self) -> None:
        """One intra-op thread for a model that runs on the event loop, unless the config sets a
        count: onnxruntime's worker threads spin-wait after every run, and beside a loop that
        answers thousands of tiny batches a second they only took CPU from it and from the
        clients (a worker spinning at 85 % of a core on the demo MLP at 32 connections)."""
        if self.context.config.onnx.intra_op_threads == 0 and self.device == "cpu":
            self._session = self._new_session(1)

    def signature(self) -> Signature:
        return Signature(self._inputs, self._outputs)

    def predict(self, inputs: Arrays) -> Arrays:
        feed = {name: (_decode(array) if name in self._strings else array) for name, array in inputs.items()}
        results = self._session.run(self._output_names, feed)
        outputs: Arrays = {}
        for name, result in zip(self._output_names, results, strict=True):
            array = np.asarray(result)
            if array.dtype.kind in ("U", "O"):
                array = _encode(array)
            outputs[name] = array
        return outputs

    def unload(self) -> None:
        self._session = None  # type: ignore[assignment,unused-ignore]  # untyped unless onnxruntime ships stubs


def cuda_providers(device: str) -> list[str | tuple[str, dict[str, str]]]:
    """The execution providers for ``device`` ("cpu" or "cuda:N"): CUDA on GPU N, the CPU for what it cannot run."""
    if device == "cpu":
        return ["CPUExecutionProvider"]
    return [("CUDAExecutionProvider", {"device_id": str(device_index(device))}), "CPUExecutionProvider"]
