"""Transport-neutral request and response types, and the datatype table.

Tensors hold numpy arrays. BYTES tensors are numpy ``object`` arrays whose
elements are ``bytes``. Shapes are full shapes: when a model batches, the first
dimension is the batch dimension and is declared as -1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from servekit.errors import InvalidInput

__all__ = [
    "DATATYPES",
    "Arrays",
    "InferenceRequest",
    "InferenceResponse",
    "ModelMetadata",
    "RequestedOutput",
    "SimplePrediction",
    "Tensor",
    "TensorSpec",
    "datatype_of",
    "is_decimal",
    "numpy_dtype",
]

# Open Inference Protocol datatype -> numpy dtype. BYTES maps to object.
DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}
# Tensors by name, as runtimes, the batcher and the cache see them.
Arrays = dict[str, np.ndarray[Any, Any]]

_BY_DTYPE: dict[np.dtype[Any], str] = {dtype: name for name, dtype in DATATYPES.items()}


def is_decimal(text: str) -> bool:
    """Whether ``text`` is a non-negative integer in ASCII digits: what ``int()`` reads as one.
    (``str.isdigit`` also accepts digits such as '²', which ``int()`` refuses.)"""
    return text.isascii() and text.isdigit()


def numpy_dtype(datatype: str) -> np.dtype[Any]:
    """The numpy dtype of an OIP datatype name; InvalidInput for unknown names."""
    try:
        return DATATYPES[datatype]
    except KeyError:
        known = ", ".join(DATATYPES)
        raise InvalidInput(f"unknown datatype {datatype!r}; expected one of {known}") from None


def datatype_of(array: np.ndarray[Any, Any]) -> str:
    """The OIP datatype name of a numpy array (str/bytes arrays are BYTES)."""
    dtype = array.dtype
    if dtype.kind in ("S", "U", "O"):
        return "BYTES"
    try:
        return _BY_DTYPE[dtype]
    except KeyError:
        raise InvalidInput(f"numpy dtype {dtype} has no Open Inference Protocol datatype") from None


@dataclass(slots=True)
class Tensor:
    """A named tensor: datatype, full shape and data as a numpy array."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray[Any, Any]
    parameters: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_array(cls, name: str, array: np.ndarray[Any, Any]) -> Tensor:
        if array.dtype.kind in ("S", "U"):
            array = np.array([_as_bytes(x) for x in array.reshape(-1)], dtype=object).reshape(array.shape)
        return cls(name=name, datatype=datatype_of(array), shape=tuple(array.shape), data=array)


def _as_bytes(value: Any) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


@dataclass(slots=True)
class RequestedOutput:
    """An output the client asked for, with its per-output parameters (e.g. binary_data)."""

    name: str
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class InferenceRequest:
    model_name: str
    inputs: list[Tensor]
    model_version: str | None = None
    id: str | None = None
    outputs: list[RequestedOutput] | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    # Absolute time.monotonic() after which the request must not start running.
    deadline: float | None = None


@dataclass(slots=True)
class InferenceResponse:
    model_name: str
    model_version: str
    outputs: list[Tensor]
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """A declared input or output: name, datatype and full shape (-1 = any size)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "versions": list(self.versions),
            "platform": self.platform,
            "inputs": [spec.to_dict() for spec in self.inputs],
            "outputs": [spec.to_dict() for spec in self.outputs],
        }


@dataclass(frozen=True, slots=True)
class SimplePrediction:
    """The simple API's answer to one /predict call (or one ModelService request)."""

    predictions: np.ndarray[Any, Any]
    probabilities: np.ndarray[Any, Any] | None
    latency_ms: float
