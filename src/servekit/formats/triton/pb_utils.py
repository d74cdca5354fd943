"""servekit's ``triton_python_backend_utils``: what a Triton python backend model.py imports as pb_utils.

Written from Triton's python backend documentation and the public names of its module; it
is handed to model.py files only, as their ``triton_python_backend_utils`` (see
``servekit.formats.triton.model_module``), never installed as a top-level module.

Tensors hold numpy arrays; BYTES (TYPE_STRING) tensors are numpy object arrays of ``bytes``,
as Triton gives them. A model answers each request with an ``InferenceResponse`` holding its
output tensors, or a ``TritonError`` that fails that request alone. Not provided: BLS
(``InferenceRequest.exec``), decoupled response senders, custom metrics, GPU tensors.
"""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from servekit.formats.triton.autocomplete import ModelConfig

__all__ = [
    "TRITONSERVER_REQUEST_FLAG_SEQUENCE_END",
    "TRITONSERVER_REQUEST_FLAG_SEQUENCE_START",
    "TRITONSERVER_REQUEST_RELEASE_ALL",
    "TRITONSERVER_REQUEST_RELEASE_RESCHEDULE",
    "TRITONSERVER_RESPONSE_COMPLETE_FINAL",
    "TRITON_STRING_TO_NUMPY",
    "InferenceRequest",
    "InferenceResponse",
    "Logger",
    "ModelConfig",
    "Tensor",
    "TritonError",
    "TritonModelException",
    "deserialize_bytes_tensor",
    "get_input_config_by_name",
    "get_input_tensor_by_name",
    "get_output_config_by_name",
    "get_output_tensor_by_name",
    "numpy_to_triton_type",
    "serialize_byte_tensor",
    "triton_string_to_numpy",
    "triton_to_numpy_type",
    "using_decoupled_model_transaction_policy",
]

TRITONSERVER_REQUEST_FLAG_SEQUENCE_START = 1
TRITONSERVER_REQUEST_FLAG_SEQUENCE_END = 2
TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1
TRITONSERVER_REQUEST_RELEASE_ALL = 1
TRITONSERVER_REQUEST_RELEASE_RESCHEDULE = 2

# Triton's DataType enum numbers (model_config.proto) and the numpy type of each.
_TYPES: tuple[tuple[int, str, type[Any]], ...] = (
    (1, "TYPE_BOOL", np.bool_), (2, "TYPE_UINT8", np.uint8), (3, "TYPE_UINT16", np.uint16),
    (4, "TYPE_UINT32", np.uint32), (5, "TYPE_UINT64", np.uint64), (6, "TYPE_INT8", np.int8),
    (7, "TYPE_INT16", np.int16), (8, "TYPE_INT32", np.int32), (9, "TYPE_INT64", np.int64),
    (10, "TYPE_FP16", np.float16), (11, "TYPE_FP32", np.float32), (12, "TYPE_FP64", np.float64),
    (13, "TYPE_STRING", np.object_),
)
TRITON_STRING_TO_NUMPY: dict[str, type[Any]] = {name: numpy_type for _, name, numpy_type in _TYPES}
TRITON_STRING_TO_NUMPY["TYPE_BOOL"] = bool  # what models comparing against Triton's table expect


def triton_to_numpy_type(data_type: int) -> type[Any] | None:
    """The numpy type of a DataType number (e.g. 11 -> np.float32); None for unknown numbers."""
    return next((numpy_type for number, _, numpy_type in _TYPES if number == data_type), None)


def numpy_to_triton_type(data_type: Any) -> int | None:
    """The DataType number of a numpy type (np.bytes_ and object are TYPE_STRING, 13)."""
    if data_type == np.bytes_:
        return 13
    return next((number for number, _, numpy_type in _TYPES if data_type == numpy_type), None)


def triton_string_to_numpy(triton_type_string: str) -> type[Any]:
    """The numpy type of a ``TYPE_*`` name, as the model config's JSON spells data types."""
    return TRITON_STRING_TO_NUMPY[triton_type_string]


def serialize_byte_tensor(input_tensor: np.ndarray[Any, Any]) -> bytes | None:
    """Elements of a bytes/object array in C order, each as a 4-byte little-endian length and its
    bytes (non-bytes objects as their UTF-8 ``str``); None for a non-bytes array."""
    if input_tensor.size == 0:
        return b""
    if input_tensor.dtype != np.object_ and input_tensor.dtype.type != np.bytes_:
        return None
    parts: list[bytes] = []
    for item in input_tensor.ravel(order="C"):
        value = item if isinstance(item, bytes) else str(item).encode("utf-8")
        parts += [struct.pack("<I", len(value)), value]
    return b"".join(parts)


def deserialize_bytes_tensor(encoded_tensor: bytes) -> np.ndarray[Any, Any]:
    """The inverse of serialize_byte_tensor: a 1-D object array of the bytes elements."""
    items: list[bytes] = []
    offset = 0
    while offset < len(encoded_tensor):
        (length,) = struct.unpack_from("<I", encoded_tensor, offset)
        items.append(bytes(encoded_tensor[offset + 4 : offset + 4 + length]))
        offset += 4 + length
    array = np.empty(len(items), dtype=np.object_)
    array[:] = items
    return array


class TritonError(Exception):
    """An error a model answers a request with (``InferenceResponse(error=...)``); its code (default
    INTERNAL) sets the status the client sees (see servekit.formats.triton.python_backend)."""

    UNKNOWN = 0
    INTERNAL = 1
    NOT_FOUND = 2
    INVALID_ARG = 3
    UNAVAILABLE = 4
    UNSUPPORTED = 5
    ALREADY_EXISTS = 6
    CANCELLED = 7

    def __init__(self, message: str, code: int = INTERNAL) -> None:
        super().__init__(message)
        self._message = message
        self._code = code

    def message(self) -> str:
        return self._message

    def code(self) -> int:
        return self._code


class TritonModelException(Exception):
    """Raised by pb_utils calls that cannot be served (e.g. BLS)."""


class Tensor:
    """A named tensor backed by a numpy array (always in CPU memory)."""

    def __init__(self, name: str, numpy_array: Any, *, _checked: bool = False) -> None:
        array = numpy_array if _checked else np.asarray(numpy_array)
        kind = array.dtype.kind
        if kind == "U":  # str elements: Triton's TYPE_STRING holds bytes
            array = np.vectorize(lambda item: item.encode("utf-8"), otypes=[np.object_])(array)
        elif kind == "S":
            array = array.astype(np.object_)
        self._name = name
        self._array: np.ndarray[Any, Any] = array

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray[Any, Any]:
        return self._array

    def shape(self) -> list[int]:
        return list(self._array.shape)

    def triton_dtype(self) -> int | None:
        return numpy_to_triton_type(self._array.dtype.type)

    def is_cpu(self) -> bool:
        return True

    def to_dlpack(self) -> Any:
        return self._array.__dlpack__()

    def __dlpack__(self, stream: Any = None) -> Any:
        return self._array.__dlpack__()

    def __dlpack_device__(self) -> tuple[int, int]:
        return self._array.__dlpack_device__()

    @staticmethod
    def from_dlpack(name: str, dlpack_object: Any) -> Tensor:
        """A Tensor sharing the memory of any object with ``__dlpack__`` (a CPU torch tensor, ...)."""
        if not hasattr(dlpack_object, "__dlpack__"):
            raise TritonModelException("from_dlpack needs an object with __dlpack__ (a bare capsule is not taken)")
        return Tensor(name, np.from_dlpack(dlpack_object))

    def __repr__(self) -> str:
        return f"Tensor({self._name!r}, shape={list(self._array.shape)}, dtype={self._array.dtype})"


class _Parameters:
    """A request's or response's parameters: JSON object text, or a mapping turned into that text
    the first time a model asks (most never do; the mapping is copied at once, so changes to the
    caller's own do not show)."""

    __slots__ = ("_separators", "_text", "_values")

    def __init__(self, given: Mapping[str, Any] | str | None, separators: tuple[str, str]) -> None:
        self._separators = separators
        self._values: dict[str, Any] | None = None
        self._text: str | None = "{}"
        if isinstance(given, str):
            self._text = given
        elif given:
            self._values, self._text = dict(given), None

    def text(self) -> str:
        if self._text is None:
            self._text = json.dumps(self._values, separators=self._separators)
        return self._text


class InferenceRequest:
    """One client request as ``execute`` receives it."""

    def __init__(self, inputs: Sequence[Tensor], requested_output_names: Iterable[str] = (), request_id: str = "",
                 parameters: Mapping[str, Any] | str | None = None, correlation_id: int | str = 0,
                 flags: int = 0, model_name: str = "") -> None:
        self._inputs = list(inputs)
        self._requested = set(requested_output_names)
        self._id = request_id
        self._parameters = _Parameters(parameters, (",", ":"))
        self._correlation_id = correlation_id
        self._flags = flags
        self.model_name = model_name

    def inputs(self) -> list[Tensor]:
        return list(self._inputs)

    def requested_output_names(self) -> set[str]:
        """The outputs the client asked for (every output when it named none), as Triton: a set."""
        return set(self._requested)

    def request_id(self) -> str:
        return self._id

    def parameters(self) -> str:
        """The request's parameters as a JSON object text, e.g. ``{"p1":"v","p2":3}``."""
        return self._parameters.text()

    def correlation_id(self) -> int | str:
        return self._correlation_id

    def flags(self) -> int:
        return self._flags

    def timeout(self) -> int:
        return 0

    def is_cancelled(self) -> bool:
        return False

    def exec(self, *args: Any, **kwargs: Any) -> Any:
        raise TritonModelException("BLS (InferenceRequest.exec) is not served by servekit")

    async def async_exec(self, *args: Any, **kwargs: Any) -> Any:
        raise TritonModelException("BLS (InferenceRequest.async_exec) is not served by servekit")

    def get_response_sender(self) -> Any:
        raise TritonModelException("response senders belong to decoupled models, which servekit does not serve")


class InferenceResponse:
    """A model's answer to one request: output tensors, or an error for that request alone."""

    def __init__(self, output_tensors: Sequence[Tensor] | None = None, error: TritonError | str | None = None,
                 parameters: Mapping[str, Any] | str | None = None) -> None:
        self._outputs = list(output_tensors or [])
        self._error = TritonError(error) if isinstance(error, str) else error
        self._parameters = _Parameters(parameters, (", ", ": "))

    def output_tensors(self) -> list[Tensor]:
        return list(self._outputs)

    def has_error(self) -> bool:
        return self._error is not None

    def error(self) -> TritonError | None:
        return self._error

    def parameters(self) -> str:
        return self._parameters.text()


def get_input_tensor_by_name(inference_request: InferenceRequest, name: str) -> Tensor | None:
    """The request's input named ``name``, or None (an optional input the client left out)."""
    for tensor in inference_request._inputs:  # every model calls this per input per request: no list copy
        if tensor._name == name:
            return tensor
    return None


def get_output_tensor_by_name(inference_response: InferenceResponse, name: str) -> Tensor | None:
    for tensor in inference_response._outputs:
        if tensor._name == name:
            return tensor
    return None


def get_input_config_by_name(model_config: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    """The entry of ``model_config["input"]`` (the JSON config ``initialize`` received) named ``name``."""
    return next((entry for entry in model_config.get("input", []) if entry["name"] == name), None)


def get_output_config_by_name(model_config: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    return next((entry for entry in model_config.get("output", []) if entry["name"] == name), None)


def using_decoupled_model_transaction_policy(model_config: Mapping[str, Any]) -> bool:
    return bool(model_config.get("model_transaction_policy", {}).get("decoupled", False))


class Logger:
    """Log lines from model code, into servekit's log (logger ``servekit.triton_python``)."""

    _log = logging.getLogger("servekit.triton_python")

    class LogLevel:
        INFO = logging.INFO
        WARNING = logging.WARNING
        ERROR = logging.ERROR
        VERBOSE = logging.DEBUG

    @classmethod
    def log(cls, message: str, level: int = logging.INFO) -> None:
        cls._log.log(level, "%s", message)

    @classmethod
    def log_info(cls, message: str) -> None:
        cls._log.info("%s", message)

    @classmethod
    def log_warn(cls, message: str) -> None:
        cls._log.warning("%s", message)

    @classmethod
    def log_error(cls, message: str) -> None:
        cls._log.error("%s", message)

    @classmethod
    def log_verbose(cls, message: str) -> None:
        cls._log.debug("%s", message)
