"""Tensor specs from the command line, and the inputs built from them.

Pure except for :func:`load_samples`, which reads the user's .npy/.npz file. Shapes follow
servekit's convention: the first dimension is the batch and is -1 in a spec; a sample's
batch is the number of rows it has.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from servekit.toolkit.errors import ToolkitError
from servekit.types import DATATYPES, TensorSpec

__all__ = ["Arrays", "batch_of", "load_samples", "parse_shape", "random_inputs", "with_batch"]

Arrays = dict[str, np.ndarray[Any, Any]]


def parse_shape(text: str) -> tuple[int, ...]:
    """``"1,64"`` -> ``(1, 64)``. The first number is the batch (-1 allowed there only)."""
    try:
        dims = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ToolkitError(f"--input-shape {text!r}: expected comma-separated integers such as 1,64") from None
    if not dims:
        raise ToolkitError(f"--input-shape {text!r}: give at least the batch dimension, e.g. 1,64")
    if dims[0] == 0 or dims[0] < -1 or any(dim < 1 for dim in dims[1:]):
        raise ToolkitError(f"--input-shape {text!r}: dimensions must be positive (-1 only for the batch)")
    return dims


def batch_of(shape: Sequence[int]) -> int:
    """The rows a shape asks for; a -1 batch means one row."""
    return shape[0] if shape and shape[0] > 0 else 1


def with_batch(spec: TensorSpec, batch: int) -> tuple[int, ...]:
    """A concrete shape for ``spec`` with ``batch`` rows; other -1 dims must have been resolved."""
    rest = spec.shape[1:]
    if any(dim < 1 for dim in rest):
        raise ToolkitError(
            f"input {spec.name!r} has shape {list(spec.shape)}: only the first (batch) dimension may be"
            " variable here; give the full shape with --input-shape"
        )
    return (batch, *rest)


def random_inputs(specs: Sequence[TensorSpec], batch: int, rng: np.random.Generator) -> Arrays:
    """Random data of each spec's datatype with ``batch`` rows.

    Floats are standard normal, integers 0..9 (small enough to index an embedding of ten),
    booleans fair coins, BYTES short ASCII strings. Same ``rng`` state, same arrays.
    """
    arrays: Arrays = {}
    for spec in specs:
        shape = with_batch(spec, batch)
        dtype = DATATYPES[spec.datatype]
        if spec.datatype == "BYTES":
            words = rng.integers(0, 10, size=shape)
            arrays[spec.name] = np.vectorize(lambda n: f"w{n}".encode(), otypes=[object])(words)
        elif spec.datatype == "BOOL":
            arrays[spec.name] = rng.random(shape) < 0.5
        elif dtype.kind in ("i", "u"):
            arrays[spec.name] = rng.integers(0, 10, size=shape).astype(dtype)
        else:
            arrays[spec.name] = rng.standard_normal(shape).astype(dtype)
    return arrays


def load_samples(path: Path, specs: Sequence[TensorSpec]) -> Arrays:
    """The user's inputs: a .npy for a one-input model, or a .npz keyed by input name
    (``arr_0, arr_1, ...`` are taken in input order). Each array is cast to its spec's dtype."""
    if not path.is_file():
        raise ToolkitError(f"--sample {path}: no such file")
    names = [spec.name for spec in specs]
    if path.suffix == ".npy":
        if len(specs) != 1:
            raise ToolkitError(f"--sample {path}: the model has {len(specs)} inputs; give a .npz keyed by name")
        loaded: Arrays = {names[0]: np.load(path, allow_pickle=False)}
    elif path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            stored = {key: archive[key] for key in archive.files}
        positional = [f"arr_{i}" for i in range(len(names))]
        if set(positional) <= set(stored) and not set(names) & set(stored):
            stored = {name: stored[key] for name, key in zip(names, positional, strict=True)}
        missing = [name for name in names if name not in stored]
        if missing:
            raise ToolkitError(f"--sample {path}: no array for input(s) {', '.join(missing)} (has {', '.join(stored)})")
        loaded = {name: stored[name] for name in names}
    else:
        raise ToolkitError(f"--sample {path}: expected a .npy or .npz file")
    for spec in specs:
        array = loaded[spec.name]
        if array.ndim != len(spec.shape):
            raise ToolkitError(
                f"--sample {path}: input {spec.name!r} has shape {list(array.shape)}; expected rank {len(spec.shape)}"
                f" like {list(spec.shape)}"
            )
        loaded[spec.name] = array.astype(DATATYPES[spec.datatype], copy=False)
    return loaded
