"""Triton's latency summaries (``--triton-metrics-config summary_latencies=true``), and that flag's parser.

tritonserver writes, with ``--metrics-config summary_latencies=true`` (off by default), a Prometheus
*summary* beside each latency counter: ``nv_inference_{request,queue,compute_input,compute_infer,
compute_output}_summary_us`` with labels ``model``, ``version`` and ``quantile``, plus ``_count`` and
``_sum``. Its quantiles cover a sliding window of the last minute (prometheus-cpp's default, which
Triton keeps: 60 s in five age buckets of 12 s), by default 0.5, 0.9, 0.95, 0.99 and 0.999;
``summary_quantiles=0.5:0.05,0.9:0.01`` sets others, each with an allowed error. ``_count`` and
``_sum`` cover the whole run, not the window. A quantile with nothing in its window is NaN.

prometheus-client's Summary has ``_count`` and ``_sum`` only. The quantiles here come from DataDog's
``ddsketch`` package: one DDSketch per 12-second slice of the window (five slices), an observation
added to the current slice only, the slices merged when the page is scraped. Each quantile is within
1 % of the true value (DDSketch's relative accuracy), rather than within a rank error as in Triton's
CKMS estimator: the error half of ``summary_quantiles`` is accepted, for Triton's syntax, and not
used. Why not CKMS (the ``quantile-estimator`` package, Triton's algorithm): in Python it cost about
15 microseconds per observation (every observation goes into all five age buckets' estimators, whose
compression walks a linked list), which took a python-backend model from about 4,000 to about 1,000
requests per second with five summaries; a DDSketch observation costs under a microsecond.

The series live in the memory of the process that serves the requests. With one worker that is the
process of the metrics page, which reads them as they are; with ``--workers N`` each worker writes
its series to a file every second and the page merges them (DDSketches merge; counts and sums add
up): ``servekit.observability.triton_summary_files``.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:  # imported where used: config.py reads the parser below, and ddsketch takes ~20 ms to import
    from ddsketch import DDSketch

__all__ = ["DEFAULT_QUANTILES", "LatencySummary", "SummaryConfig", "parse_metrics_config", "window_quantiles"]

# (quantile, allowed rank error): Triton's defaults.
DEFAULT_QUANTILES: Final[tuple[tuple[float, float], ...]] = (
    (0.5, 0.05), (0.9, 0.01), (0.95, 0.001), (0.99, 0.001), (0.999, 0.001))
WINDOW_SECONDS: Final = 60
AGE_BUCKETS: Final = 5
RELATIVE_ACCURACY: Final = 0.01
_KEYS: Final = ("summary_latencies", "summary_quantiles")


@dataclass(frozen=True)
class SummaryConfig:
    """What ``--triton-metrics-config`` asked for: summaries on or off, and their quantiles."""

    summary_latencies: bool = False
    quantiles: tuple[tuple[float, float], ...] = DEFAULT_QUANTILES


def parse_metrics_config(items: Iterable[str]) -> SummaryConfig:
    """``KEY=VALUE`` items, as Triton's ``--metrics-config`` takes them: ``summary_latencies=true``
    and ``summary_quantiles=Q:ERROR,Q:ERROR,...``. An item without ``=`` continues the previous
    value (a comma-separated environment variable splits a quantile list into items). ValueError,
    naming the item, for an unknown key or a malformed value."""
    pairs: list[list[str]] = []
    for item in (part.strip() for part in items):
        if not item:
            continue
        if "=" not in item:
            if not pairs:
                raise ValueError(f"triton metrics config {item!r}: expected KEY=VALUE (keys: {', '.join(_KEYS)})")
            pairs[-1][1] += "," + item
            continue
        key, _, value = item.partition("=")
        pairs.append([key.strip(), value.strip()])
    summaries, quantiles = False, DEFAULT_QUANTILES
    for key, value in pairs:
        if key == "summary_latencies":
            if value.lower() not in ("true", "false"):
                raise ValueError(f"triton metrics config summary_latencies={value!r}: expected true or false")
            summaries = value.lower() == "true"
        elif key == "summary_quantiles":
            quantiles = _quantiles(value)
        else:
            raise ValueError(f"triton metrics config {key!r}: unknown key (servekit takes {', '.join(_KEYS)})")
    return SummaryConfig(summaries, quantiles)


def _quantiles(text: str) -> tuple[tuple[float, float], ...]:
    found: list[tuple[float, float]] = []
    for pair in (part.strip() for part in text.split(",")):
        quantile, colon, error = pair.partition(":")
        try:
            value, allowed = float(quantile), float(error)
        except ValueError:
            value = allowed = math.nan
        if not colon or not 0 < value < 1 or not 0 < allowed < 1:
            raise ValueError(f"triton metrics config summary_quantiles: {pair!r} is not QUANTILE:ERROR with both "
                             "between 0 and 1 (e.g. 0.9:0.01)")
        found.append((value, allowed))
    return tuple(sorted(found))


def _slice_number(now: float | None) -> int:
    """Which 12-second slice of time.monotonic() (one clock for every process of the machine) ``now`` is in."""
    return int((time.monotonic() if now is None else now) // (WINDOW_SECONDS / AGE_BUCKETS))


def window_quantiles(slices: Iterable[tuple[int, DDSketch]], quantiles: Iterable[float],
                     now: float | None = None) -> list[tuple[float, float]]:
    """[(quantile, value), ...] over the slices of the last ``WINDOW_SECONDS`` among ``slices`` (from one
    process or several); a value is NaN when the window is empty, else whole microseconds."""
    from ddsketch import DDSketch

    current = _slice_number(now)
    window = DDSketch(RELATIVE_ACCURACY)
    for number, sketch in slices:
        if current - AGE_BUCKETS < number <= current:
            window.merge(sketch)
    found = []
    for quantile in quantiles:
        value = window.get_quantile_value(quantile)
        found.append((quantile, math.nan if value is None else float(round(value))))
    return found


class LatencySummary:
    """One summary series: whole microseconds observed, their count and sum since start, and the
    quantiles of the last ``WINDOW_SECONDS``. Observed from the event loop, read by the metrics
    server's thread (or written to a file for it: ``servekit.observability.triton_summary_files``):
    a lock keeps them apart."""

    __slots__ = ("_lock", "_slices", "count", "quantiles", "total")

    def __init__(self, quantiles: tuple[tuple[float, float], ...]) -> None:
        from ddsketch import DDSketch

        self.quantiles = tuple(quantile for quantile, _ in quantiles)
        # slot -> (the slice's number, its sketch)
        self._slices: list[tuple[int, DDSketch]] = [(-1, DDSketch(RELATIVE_ACCURACY)) for _ in range(AGE_BUCKETS)]
        self._lock = threading.Lock()
        self.count = 0
        self.total = 0

    def observe(self, microseconds: int, now: float | None = None, times: int = 1) -> None:
        """``times`` observations of ``microseconds`` (the requests of one batch share its compute
        times); ``now``: a ``time.monotonic()`` reading (tests pass their own)."""
        current = _slice_number(now)
        with self._lock:
            number, sketch = self._slices[current % AGE_BUCKETS]
            if number != current:  # a slice older than the window: start it afresh
                sketch = type(sketch)(RELATIVE_ACCURACY)
                self._slices[current % AGE_BUCKETS] = (current, sketch)
            sketch.add(microseconds, times)
            self.count += times
            self.total += microseconds * times

    def state(self) -> tuple[int, int, list[tuple[int, DDSketch]]]:
        """(count, sum, [(slice number, a copy of its sketch), ...]) at this moment."""
        with self._lock:
            slices = []
            for number, sketch in self._slices:
                if number >= 0:
                    copied = type(sketch)(RELATIVE_ACCURACY)
                    copied.merge(sketch)
                    slices.append((number, copied))
            return self.count, self.total, slices

    def snapshot(self, now: float | None = None) -> tuple[int, int, list[tuple[float, float]]]:
        """(count, sum, [(quantile, value), ...]) at this moment; a value is NaN when the window is empty."""
        count, total, slices = self.state()
        return count, total, window_quantiles(slices, self.quantiles, now)
