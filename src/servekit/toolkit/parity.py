"""Numeric parity: does the converted model answer like its source?

Pure: arrays in, a report out. An element of a floating-point output agrees when
``|converted - source| <= T * (1 + |source|)`` for the tolerance ``T`` (an absolute bound
near zero, a relative one for large values); integer, boolean and string outputs must be
equal. The report keeps the largest absolute and relative error of every output over
every case, so one line per output says how close the conversion is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from servekit.toolkit.specs import Arrays

__all__ = ["OutputParity", "ParityReport", "compare_outputs"]


@dataclass(slots=True)
class OutputParity:
    """One output, over every case compared so far."""

    name: str
    exact: bool  # compared for equality (integers, booleans, strings)
    max_abs: float = 0.0
    max_rel: float = 0.0
    mismatched: int = 0
    elements: int = 0
    problem: str = ""  # a structural difference (missing output, other shape); fails outright

    @property
    def passed(self) -> bool:
        return not self.problem and self.mismatched == 0

    def describe(self, tolerance: float) -> str:
        if self.problem:
            return f"{self.name}: {self.problem}"
        if self.exact:
            return f"{self.name}: {self.mismatched} of {self.elements} values differ (compared exactly)"
        verdict = "ok" if self.passed else f"{self.mismatched} of {self.elements} values past tolerance {tolerance:g}"
        return f"{self.name}: max abs error {self.max_abs:.3g}, max rel error {self.max_rel:.3g} ({verdict})"


@dataclass(slots=True)
class ParityReport:
    tolerance: float
    outputs: dict[str, OutputParity] = field(default_factory=dict)
    cases: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(output.passed for output in self.outputs.values())

    def add_case(self, description: str, source: Arrays, converted: Arrays) -> None:
        """Compare one case's outputs (by name) and fold them into the report."""
        self.cases.append(description)
        for name, expected in source.items():
            entry = self.outputs.setdefault(name, OutputParity(name, exact=_is_exact(expected)))
            got = converted.get(name)
            if got is None:
                entry.problem = "missing from the converted model's outputs"
                continue
            compare_outputs(entry, np.asarray(expected), np.asarray(got), self.tolerance)

    def lines(self) -> list[str]:
        return [output.describe(self.tolerance) for output in self.outputs.values()]


def compare_outputs(entry: OutputParity, expected: np.ndarray[Any, Any], got: np.ndarray[Any, Any],
                    tolerance: float) -> None:
    """Fold one pair of arrays into ``entry``. Shapes that differ only by size-1 axes
    (``[n]`` against ``[n, 1]``) are compared element by element."""
    if expected.size != got.size or (expected.shape != got.shape and _squeezed(expected) != _squeezed(got)):
        entry.problem = f"shape {list(got.shape)} where the source gives {list(expected.shape)}"
        return
    expected, got = expected.reshape(-1), got.reshape(-1)
    entry.elements += expected.size
    if entry.exact:
        if expected.dtype.kind in ("O", "S", "U") or got.dtype.kind in ("O", "S", "U"):
            equal = np.array([_text(a) == _text(b) for a, b in zip(expected, got, strict=True)], dtype=bool)
        else:
            equal = expected.astype(np.float64) == got.astype(np.float64)
        entry.mismatched += int((~equal).sum())
        return
    source, converted = expected.astype(np.float64), got.astype(np.float64)
    error = np.abs(converted - source)
    both_nan = np.isnan(source) & np.isnan(converted)
    error[both_nan] = 0.0
    if error.size:
        entry.max_abs = max(entry.max_abs, float(np.nanmax(np.where(np.isnan(error), np.inf, error))))
        relative = error / np.maximum(np.abs(source), np.finfo(np.float64).tiny)
        entry.max_rel = max(entry.max_rel, float(np.max(np.where(error == 0, 0.0, relative))))
    agrees = both_nan | (error <= tolerance * (1.0 + np.abs(source)))
    entry.mismatched += int((~agrees).sum())


def _is_exact(array: Any) -> bool:
    return np.asarray(array).dtype.kind not in ("f", "c")


def _squeezed(array: np.ndarray[Any, Any]) -> tuple[int, ...]:
    return tuple(dim for dim in array.shape if dim != 1)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
