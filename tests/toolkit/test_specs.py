"""Shapes from the command line, random inputs and user samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from servekit.toolkit.errors import ToolkitError
from servekit.toolkit.specs import load_samples, parse_shape, random_inputs
from servekit.types import TensorSpec

SPECS = [TensorSpec("x", "FP32", (-1, 3)), TensorSpec("ids", "INT64", (-1, 2)), TensorSpec("on", "BOOL", (-1,)),
         TensorSpec("words", "BYTES", (-1, 1))]


def test_parse_shape() -> None:
    assert parse_shape("1,64") == (1, 64) and parse_shape("-1, 3, 8") == (-1, 3, 8)
    for bad in ("", "a,b", "0,3", "1,-1", "-2"):
        with pytest.raises(ToolkitError):
            parse_shape(bad)


def test_random_inputs_follow_the_specs() -> None:
    arrays = random_inputs(SPECS, 4, np.random.default_rng(0))
    assert {name: (a.dtype.kind, a.shape) for name, a in arrays.items()} == {
        "x": ("f", (4, 3)), "ids": ("i", (4, 2)), "on": ("b", (4,)), "words": ("O", (4, 1))}
    assert arrays["ids"].min() >= 0 and arrays["ids"].max() <= 9
    assert np.array_equal(random_inputs(SPECS[:1], 4, np.random.default_rng(0))["x"], arrays["x"])
    with pytest.raises(ToolkitError, match="only the first"):
        random_inputs([TensorSpec("t", "FP32", (-1, -1))], 1, np.random.default_rng(0))


def test_samples_by_name_position_and_rank(tmp_path: Path) -> None:
    np.savez(tmp_path / "named.npz", x=np.ones((2, 3)), ids=np.zeros((2, 2)))
    np.savez(tmp_path / "positional.npz", np.ones((2, 3)), np.zeros((2, 2)))
    for name in ("named.npz", "positional.npz"):
        loaded = load_samples(tmp_path / name, SPECS[:2])
        assert loaded["x"].dtype == np.float32 and loaded["ids"].dtype == np.int64
    np.save(tmp_path / "flat.npy", np.ones(3))
    with pytest.raises(ToolkitError, match="expected rank 2"):
        load_samples(tmp_path / "flat.npy", SPECS[:1])
    with pytest.raises(ToolkitError, match=r"give a \.npz keyed by name"):
        load_samples(tmp_path / "flat.npy", SPECS[:2])
