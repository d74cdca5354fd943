"""What ``servekit advise`` measures: each way servekit could run a model, at each batch size.

A *candidate* is one runtime at one thread setting, called the way servekit's runtime
calls it (numpy in, numpy out). A *curve* is its latency per call and rows per second at
batch sizes 1, 2, 4, ... up to the largest asked for. The whole measurement is bounded by
a budget in seconds, shared equally by the candidates and, within one, by its batch sizes;
a candidate that runs out skips its largest batches (and says so). Loading and converting
the model come before and are not counted.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from servekit.toolkit.specs import Arrays, random_inputs
from servekit.types import TensorSpec

__all__ = ["Candidate", "Curve", "Point", "batch_sizes", "measure_candidates"]

# Fewest timed calls per point: a median of fewer says little.
_MIN_CALLS = 3
_MAX_CALLS = 5_000
_WARMUP_SHARE = 0.1


@dataclass(slots=True)
class Candidate:
    """One way to run the model. ``runtime`` is servekit's runtime name; None when servekit does not
    serve it as is (PyTorch eager: a handler would run it)."""

    label: str
    runtime: str | None
    threads: int  # intra-op threads the library was given; 0: the library's default
    run: Callable[[Arrays], Any]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec] | None = None  # to declare in config.yaml; None: the runtime tells
    enter: Callable[[], None] | None = None  # set up before its calls (e.g. torch's thread count)
    prepare: str = ""  # how to make its model file, when the source is not already that file


@dataclass(frozen=True, slots=True)
class Point:
    batch: int
    calls: int
    median_ms: float
    p90_ms: float

    @property
    def rows_per_s(self) -> float:
        return self.batch / (self.median_ms / 1000.0) if self.median_ms > 0 else float("inf")


@dataclass(slots=True)
class Curve:
    candidate: Candidate
    points: list[Point] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    error: str = ""

    def at(self, batch: int) -> Point | None:
        return next((point for point in self.points if point.batch == batch), None)

    def peak(self) -> Point | None:
        return max(self.points, key=lambda point: point.rows_per_s, default=None)


def batch_sizes(largest: int) -> list[int]:
    """1, 2, 4, ... up to ``largest`` (included even when not a power of two)."""
    sizes = [1]
    while sizes[-1] * 2 <= largest:
        sizes.append(sizes[-1] * 2)
    if sizes[-1] != largest:
        sizes.append(largest)
    return sizes


def measure_candidates(candidates: list[Candidate], budget_s: float, largest_batch: int,
                       on_point: Callable[[str], None] | None = None) -> list[Curve]:
    """Time every candidate at every batch size within ``budget_s`` seconds overall."""
    sizes = batch_sizes(largest_batch)
    share = budget_s / max(len(candidates), 1)
    curves = []
    for candidate in candidates:
        curve = Curve(candidate)
        curves.append(curve)
        if candidate.enter is not None:
            candidate.enter()
        ends = time.perf_counter() + share
        rng = np.random.default_rng(0)
        for index, batch in enumerate(sizes):
            left = ends - time.perf_counter()
            if left <= 0:
                curve.skipped = sizes[index:]
                break
            if on_point is not None:
                on_point(f"{candidate.label}, {candidate.threads} thread(s), batch {batch}")
            try:
                curve.points.append(_time_point(candidate, random_inputs(candidate.inputs, batch, rng), batch,
                                                left / (len(sizes) - index)))
            except Exception as exc:  # a runtime that fails at some batch size is reported, not fatal
                curve.error = f"batch {batch}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                curve.skipped = sizes[index:]
                break
    return curves


def _time_point(candidate: Candidate, inputs: Arrays, batch: int, seconds: float) -> Point:
    # Warm-up, a tenth of the time and at least a few calls: first calls allocate, wake thread
    # pools, and let TorchScript's profiling executor optimise for the new shape.
    warm_until = time.perf_counter() + seconds * _WARMUP_SHARE
    for calls in range(_MAX_CALLS):
        candidate.run(inputs)
        if calls + 1 >= _MIN_CALLS and time.perf_counter() >= warm_until:
            break
    times: list[float] = []
    ends = time.perf_counter() + seconds * (1 - _WARMUP_SHARE)
    while len(times) < _MIN_CALLS or (time.perf_counter() < ends and len(times) < _MAX_CALLS):
        started = time.perf_counter()
        candidate.run(inputs)
        times.append(time.perf_counter() - started)
    values = np.asarray(times) * 1000.0
    return Point(batch, len(times), float(np.median(values)), float(np.percentile(values, 90)))
