"""The shared tensor region: two mappings of one memory file stand for the server and the model's process."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from servekit.runtimes.shared_tensors import ALIGNMENT, INLINE_BELOW_BYTES, SharedArray, SharedRegion
from servekit.types import DATATYPES


@pytest.fixture
def pair() -> Iterator[tuple[SharedRegion, SharedRegion]]:
    server = SharedRegion.create()
    child = SharedRegion(os.dup(server.fileno()))  # what the child process inherits
    yield server, child
    server.close()
    child.close()


def sample(datatype: str, rows: int) -> np.ndarray[Any, Any]:
    dtype = DATATYPES[datatype]
    if datatype == "BYTES":
        array = np.empty((rows, 3), dtype=object)
        for index in range(array.size):
            array.flat[index] = b"\x00item-%d\xff" % index
        return array
    values = np.arange(rows * 3).reshape(rows, 3)
    return (values % 2 == 0) if dtype == np.bool_ else values.astype(dtype)


@pytest.mark.parametrize("datatype", list(DATATYPES))
@pytest.mark.parametrize("rows", [1, 4096])
def test_every_datatype_round_trips_small_and_large(pair: tuple[SharedRegion, SharedRegion], datatype: str,
                                                    rows: int) -> None:
    server, child = pair
    array = sample(datatype, rows)
    packed, end = server.pack({"x": array})
    child.follow(server.size)
    seen = child.unpack(packed, copy=False)["x"]
    assert seen.dtype == array.dtype and seen.shape == array.shape
    np.testing.assert_array_equal(seen, array)
    shared = datatype != "BYTES" and array.nbytes >= INLINE_BELOW_BYTES
    assert isinstance(packed["x"], SharedArray) is shared  # BYTES and small arrays travel in the message
    assert end == (array.nbytes if shared else 0)


def test_a_4_mb_tensor_goes_through_shared_memory_and_outputs_land_after_the_inputs(
        pair: tuple[SharedRegion, SharedRegion]) -> None:
    server, child = pair
    big = np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32)  # 4 MiB
    packed, end = server.pack({"a": big, "b": big[:, :100]})  # the second one is not contiguous
    child.follow(server.size)
    inputs = child.unpack(packed, copy=False)
    outputs = {"same": inputs["a"], "sum": inputs["a"] + 1}  # an output may be a view of an input
    packed_out, _ = child.pack(outputs, end)
    server.follow(child.size)
    answer = server.unpack(packed_out, copy=True)
    np.testing.assert_array_equal(answer["same"], big)
    np.testing.assert_array_equal(answer["sum"], big + 1)
    np.testing.assert_array_equal(inputs["b"], big[:, :100])  # writing outputs left the inputs alone
    offsets = [value.offset for value in (*packed.values(), *packed_out.values()) if isinstance(value, SharedArray)]
    assert all(offset % ALIGNMENT == 0 for offset in offsets) and min(offsets[2:]) >= end
    assert answer["same"].flags.owndata and answer["same"].flags.writeable


def test_byte_order_and_scalars_are_kept(pair: tuple[SharedRegion, SharedRegion]) -> None:
    server, child = pair
    big_endian = np.arange(10_000, dtype=">i4")
    packed, _ = server.pack({"be": big_endian, "scalar": np.float64(2.5), "empty": np.zeros((0, 4), np.float32)})
    child.follow(server.size)
    seen = child.unpack(packed, copy=True)
    assert seen["be"].dtype == np.dtype(">i4")
    np.testing.assert_array_equal(seen["be"], big_endian)
    assert seen["scalar"].shape == () and float(seen["scalar"]) == 2.5
    assert seen["empty"].shape == (0, 4)


def test_the_region_grows_on_either_side_and_never_shrinks(pair: tuple[SharedRegion, SharedRegion]) -> None:
    server, child = pair
    server.pack({"x": np.ones(INLINE_BELOW_BYTES, np.uint8)})
    first = server.size
    child.follow(first)
    packed, _ = child.pack({"y": np.ones(3 * first, np.uint8)}, 0)  # the child needs more room: it grows the file
    assert child.size >= 3 * first
    server.follow(child.size)
    np.testing.assert_array_equal(server.unpack(packed, copy=True)["y"], np.ones(3 * first, np.uint8))
    server.pack({"x": np.ones(INLINE_BELOW_BYTES, np.uint8)})
    assert server.size == child.size


def test_a_descriptor_past_the_mapping_is_refused(pair: tuple[SharedRegion, SharedRegion]) -> None:
    server, _ = pair
    with pytest.raises(ValueError, match="past the mapped"):
        server.unpack({"x": SharedArray(0, "<f4", (10,))}, copy=True)
