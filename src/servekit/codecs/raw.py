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

__all__ = ["MAX_DIMENSIONS", "array_from_bytes", "array_to_bytes", "check_shape", "element_count"]

_LENGTH = struct.Struct("<I")

# numpy's own limit on the number of dimensions.
MAX_DIMENSIONS = 64
# Far above any real tensor and safely below what numpy can index (2**63 bytes): the product of
# a shape's non-zero dimensions must stay under it, even when another dimension is 0.
_MAX_ELEMENTS = 2**48


def check_shape(name: str, shape: tuple[int, ...]) -> None:
    """InvalidInput unless ``shape`` is one numpy can hold: at most 64 non-negative dimensions
    whose non-zero product (elements, were the zeros not there) stays under 2**48."""
    if len(shape) > MAX_DIMENSIONS:
        raise InvalidInput(f"input {name!r}: shape has {len(shape)} dimensions; at most {MAX_DIMENSIONS}")
    product = 1
    for dim in shape:
        if dim < 0:
            raise InvalidInput(f"input {name!r}: shape {list(shape)} has a negative dimension")
        product *= max(dim, 1)
        if product >= _MAX_ELEMENTS:
            raise InvalidInput(f"input {name!r}: shape {list(shape)[:8]}{'...' if len(shape) > 8 else ''} is too "
                               "large")


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
    check_shape(name, shape)
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
