"""Raw tensor bytes, as the binary extension and gRPC raw contents carry them.

Row-major, little-endian; BOOL is one byte per element; BYTES elements are each
a 4-byte little-endian length followed by that many bytes.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from servekit.errors import InvalidInput
from servekit.types import numpy_dtype

__all__ = ["array_from_bytes", "array_to_bytes", "element_count"]

_LENGTH = struct.Struct("<I")


def element_count(shape: tuple[int, ...]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


def array_from_bytes(
    name: str, datatype: str, shape: tuple[int, ...], data: bytes | memoryview
) -> np.ndarray[Any, Any]:
    """Decode one tensor's raw bytes; InvalidInput when the length does not fit the shape.

    Numeric tensors are zero-copy views over ``data`` (read-only).
    """
    count = element_count(shape)
    if datatype == "BYTES":
        return _bytes_elements(name, shape, count, data)
    dtype = numpy_dtype(datatype).newbyteorder("<") if datatype != "BOOL" else np.dtype(np.bool_)
    expected = count * dtype.itemsize
    if len(data) != expected:
        raise InvalidInput(
            f"input {name!r}: {datatype} shape {list(shape)} needs {expected} bytes of data; got {len(data)}"
        )
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def _bytes_elements(name: str, shape: tuple[int, ...], count: int, data: bytes | memoryview) -> np.ndarray[Any, Any]:
    view = memoryview(data)
    elements: list[bytes] = []
    offset = 0
    while offset < len(view):
        if offset + 4 > len(view):
            raise InvalidInput(f"input {name!r}: BYTES data ends inside an element's 4-byte length")
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > len(view):
            raise InvalidInput(f"input {name!r}: BYTES element of {length} bytes runs past the end of the data")
        elements.append(bytes(view[offset : offset + length]))
        offset += length
    if len(elements) != count:
        raise InvalidInput(f"input {name!r}: shape {list(shape)} needs {count} BYTES elements; got {len(elements)}")
    array = np.empty(count, dtype=object)
    array[:] = elements
    return array.reshape(shape)


def array_to_bytes(array: np.ndarray[Any, Any]) -> bytes:
    """Encode an array as raw tensor bytes (BYTES for object/str arrays)."""
    if array.dtype.kind in ("O", "U", "S"):
        parts: list[bytes] = []
        for element in array.reshape(-1):
            raw = element.encode() if isinstance(element, str) else bytes(element)
            parts.append(_LENGTH.pack(len(raw)))
            parts.append(raw)
        return b"".join(parts)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return np.ascontiguousarray(array).tobytes()
