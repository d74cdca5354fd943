from __future__ import annotations

import numpy as np
import pytest

from servekit.codecs.raw import array_from_bytes, array_to_bytes
from servekit.errors import InvalidInput
from servekit.types import DATATYPES


@pytest.mark.parametrize("datatype", [d for d in DATATYPES if d != "BYTES"])
def test_numeric_round_trip(datatype: str) -> None:
    array = (np.arange(6) % 2 == 0) if datatype == "BOOL" else np.arange(6).astype(DATATYPES[datatype])
    array = array.reshape(2, 3)
    decoded = array_from_bytes("t", datatype, (2, 3), array_to_bytes(array))
    assert decoded.dtype == array.dtype
    np.testing.assert_array_equal(decoded, array)


def test_bytes_round_trip_keeps_empty_and_binary_elements() -> None:
    array = np.array([b"", b"\x00\xff", "héllo".encode()], dtype=object).reshape(3, 1)
    raw = array_to_bytes(array)
    assert raw[:4] == b"\x00\x00\x00\x00"
    decoded = array_from_bytes("t", "BYTES", (3, 1), raw)
    assert decoded.tolist() == array.tolist()


def test_wrong_length_names_the_input_and_the_sizes() -> None:
    with pytest.raises(InvalidInput, match=r"input 'x': FP32 shape \[2, 2\] needs 16 bytes of data; got 12"):
        array_from_bytes("x", "FP32", (2, 2), b"\x00" * 12)


def test_truncated_bytes_element_is_refused() -> None:
    with pytest.raises(InvalidInput, match="runs past the end"):
        array_from_bytes("s", "BYTES", (1,), b"\x05\x00\x00\x00abc")
    with pytest.raises(InvalidInput, match="needs 2 BYTES elements; got 1"):
        array_from_bytes("s", "BYTES", (2,), b"\x01\x00\x00\x00a")
