from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from servekit.cache.codec import decode_outputs, encode_outputs, request_key

IDENTITY = b"ns\0m\x001\x001\x000"


def _same(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tolist() == b.tolist()


@pytest.mark.parametrize("array", [
    np.arange(12, dtype=np.float32).reshape(3, 4),
    np.arange(12, dtype=np.float64).reshape(3, 4)[:, ::2],  # not contiguous
    np.array(7, dtype=np.int64),  # 0-d
    np.zeros((0, 3), dtype=np.float16),
    np.array([True, False]),
    np.array([2**64 - 1], dtype=np.uint64),
    np.array(["ab", "c"]),
    np.array([[b"x", b""], [b"\x00\xff", b"long" * 10]], dtype=object),
])
def test_outputs_round_trip_exactly(array: np.ndarray[Any, Any]) -> None:
    value = encode_outputs({"out": array, "other": np.ones(2, dtype=np.int8)})
    assert value is not None
    decoded = decode_outputs(value)
    assert list(decoded) == ["out", "other"]
    assert _same(decoded["out"], array)
    decoded["out"].setflags(write=True)  # a fresh, writable copy


def test_object_arrays_of_non_bytes_are_not_stored() -> None:
    assert encode_outputs({"out": np.array([{"a": 1}], dtype=object)}) is None


def test_a_foreign_or_truncated_value_is_an_error() -> None:
    value = encode_outputs({"out": np.ones(3)})
    assert value is not None
    with pytest.raises(ValueError):
        decode_outputs(b"nope" + value)
    with pytest.raises(ValueError):
        decode_outputs(value + b"x")


def test_keys_change_with_everything_an_answer_depends_on() -> None:
    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    base = request_key(IDENTITY, {"x": x}, {})
    assert base == request_key(IDENTITY, {"x": x.copy()}, {})
    assert len(base) == 32
    different = [
        request_key(IDENTITY.replace(b"m", b"n"), {"x": x}, {}),
        request_key(IDENTITY, {"x": x + 1}, {}),
        request_key(IDENTITY, {"x": x.astype(np.float64)}, {}),
        request_key(IDENTITY, {"x": x.reshape(2, 2)}, {}),
        request_key(IDENTITY, {"y": x}, {}),
        request_key(IDENTITY, {"x": x}, {"temperature": 0.5}),
    ]
    assert len({base, *different}) == len(different) + 1


def test_transport_parameters_do_not_split_the_cache() -> None:
    x = np.ones((1, 2), dtype=np.float32)
    plain = request_key(IDENTITY, {"x": x}, {})
    assert request_key(IDENTITY, {"x": x}, {"timeout": 5000, "binary_data_output": True, "priority": 1}) == plain
    assert request_key(IDENTITY, {"x": x}, {"b": 1, "a": [1, 2]}) == request_key(IDENTITY, {"x": x},
                                                                                  {"a": [1, 2], "b": 1})


def test_bytes_inputs_are_keyed_by_their_elements() -> None:
    one = np.array([b"ab", b"c"], dtype=object)
    other = np.array([b"a", b"bc"], dtype=object)  # the same bytes joined, split differently
    assert request_key(IDENTITY, {"s": one}, {}) != request_key(IDENTITY, {"s": other}, {})
