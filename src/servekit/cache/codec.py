"""Cache keys and cached values, pure: no I/O.

A key is a SHA-256 over everything an answer depends on: the cache namespace and the
model version's identity (see ``servekit.cache.response``), the request parameters that
could reach the model, and every input array (name, dtype, shape, bytes). A value holds
output arrays as a small JSON header and their raw bytes, so decoding is one
``np.frombuffer`` per array.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson

from servekit.types import Arrays

__all__ = ["IGNORED_PARAMETERS", "decode_outputs", "encode_outputs", "request_key"]

# Request parameters that only shape transport or scheduling, never an answer's values.
IGNORED_PARAMETERS = frozenset({"timeout", "priority", "binary_data_output", "binary_data", "headers", "routing_key"})
_MAGIC = b"SKC1"
_LENGTH = struct.Struct("<I")


def _object_bytes(array: np.ndarray[Any, Any]) -> bytes | None:
    """A BYTES (object) array as length-prefixed elements; None if an element is not bytes."""
    parts: list[bytes] = []
    for element in array.reshape(-1):
        if not isinstance(element, bytes):
            return None
        parts.append(_LENGTH.pack(len(element)))
        parts.append(element)
    return b"".join(parts)


def _raw(array: np.ndarray[Any, Any]) -> memoryview:
    """The array's bytes, flat (a copy only when the array is not contiguous)."""
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8).data


def request_key(identity: bytes, inputs: Arrays, parameters: Mapping[str, Any]) -> bytes:
    """The cache key (32 bytes) of ``inputs`` and ``parameters`` for the model version ``identity``."""
    digest = hashlib.sha256(identity)
    relevant = {name: value for name, value in parameters.items() if name not in IGNORED_PARAMETERS}
    digest.update(orjson.dumps(relevant, option=orjson.OPT_SORT_KEYS, default=repr))
    for name in sorted(inputs):
        array = inputs[name]
        header = orjson.dumps([name, array.dtype.str, list(array.shape)])
        digest.update(_LENGTH.pack(len(header)))
        digest.update(header)
        if array.dtype.kind == "O":
            digest.update(_object_bytes(array) or orjson.dumps(array.tolist(), default=repr))
        else:
            digest.update(_raw(array))
    return digest.digest()


def encode_outputs(outputs: Arrays) -> bytes | None:
    """Outputs as cache bytes; None when one cannot be stored exactly (an object array of non-bytes)."""
    header: list[list[Any]] = []
    bodies: list[bytes | memoryview] = []
    for name, array in outputs.items():
        if array.dtype.kind == "O":
            body: bytes | memoryview | None = _object_bytes(array)
            if body is None:
                return None
        else:
            body = _raw(array)
        header.append([name, array.dtype.str, list(array.shape), body.nbytes if isinstance(body, memoryview)
                       else len(body)])
        bodies.append(body)
    head = orjson.dumps(header)
    return b"".join([_MAGIC, _LENGTH.pack(len(head)), head, *bodies])


def _decode_objects(body: memoryview, count: int) -> np.ndarray[Any, Any]:
    out = np.empty(count, dtype=object)
    offset = 0
    for index in range(count):
        (length,) = _LENGTH.unpack_from(body, offset)
        offset += _LENGTH.size
        out[index] = bytes(body[offset : offset + length])
        offset += length
    return out


def decode_outputs(value: bytes) -> Arrays:
    """The arrays ``encode_outputs`` stored (fresh, writable copies). ValueError when ``value`` is not one."""
    view = memoryview(value)
    if bytes(view[:4]) != _MAGIC:
        raise ValueError("not a servekit cache value")
    (head_length,) = _LENGTH.unpack_from(view, 4)
    offset = 4 + _LENGTH.size
    header = orjson.loads(bytes(view[offset : offset + head_length]))
    offset += head_length
    outputs: Arrays = {}
    for name, dtype, shape, length in header:
        body = view[offset : offset + length]
        offset += length
        count = int(np.prod(shape, dtype=np.int64))
        if dtype.endswith("O"):
            outputs[name] = _decode_objects(body, count).reshape(shape)
        else:
            outputs[name] = np.frombuffer(body, dtype=np.dtype(dtype), count=count).reshape(shape).copy()
    if offset != len(view):
        raise ValueError("cache value has trailing bytes")
    return outputs
