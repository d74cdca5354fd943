"""Triton's latency summaries (``--triton-metrics-config summary_latencies=true``), and that flag's parser.

tritonserver writes, with ``--metrics-config summary_latencies=true`` (off by default), a Prometheus
*summary* beside each latency counter: ``nv_inference_{request,queue,compute_input,compute_infer,
compute_output}_summary_us`` with labels ``model``, ``version`` and ``quantile``, plus ``_count`` and
``_sum``. Its quantiles are estimated over a sliding window of the last 60 seconds (five buckets of
12 s: prometheus-cpp's defaults, which Triton keeps) with the targeted-quantile algorithm of Cormode
and Muthukrishnan ("CKMS"), each quantile with an allowed rank error: by default 0.5 (0.05),
0.9 (0.01), 0.95 (0.001), 0.99 (0.001) and 0.999 (0.001); ``summary_quantiles=0.5:0.05,0.9:0.01``
sets others. ``_count`` and ``_sum`` cover the whole run, not the window. A quantile with nothing in
its window is NaN.

prometheus-client's Summary has ``_count`` and ``_sum`` only; the estimation here is the
``quantile-estimator`` package's ``TimeWindowEstimator``: the same algorithm, the same (quantile,
error) pairs and the same ring of age buckets as prometheus-cpp, so the two servers' quantiles mean
the same thing and react to load in the same time.

The quantiles live in the memory of the process that serves the requests, which is the process
that serves the metrics page only with one worker: the settings refuse summaries with ``--workers``
above 1 (quantile sketches of several processes cannot be added up the way counters are).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from quantile_estimator import TimeWindowEstimator

__all__ = ["DEFAULT_QUANTILES", "LatencySummary", "SummaryConfig", "parse_metrics_config"]

# (quantile, allowed rank error): Triton's defaults.
DEFAULT_QUANTILES: Final[tuple[tuple[float, float], ...]] = (
    (0.5, 0.05), (0.9, 0.01), (0.95, 0.001), (0.99, 0.001), (0.999, 0.001))
WINDOW_SECONDS: Final = 60
AGE_BUCKETS: Final = 5
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


class LatencySummary:
    """One summary series: whole microseconds observed, their count and sum since start, and the
    quantiles of the last ``WINDOW_SECONDS``. Observed from the event loop, read by the metrics
    server's thread: a lock keeps the two apart."""

    __slots__ = ("_estimator", "_lock", "_quantiles", "count", "total")

    def __init__(self, quantiles: tuple[tuple[float, float], ...]) -> None:
        self._quantiles = quantiles
        self._estimator = TimeWindowEstimator(*quantiles, max_age_seconds=WINDOW_SECONDS, age_buckets=AGE_BUCKETS)
        self._lock = threading.Lock()
        self.count = 0
        self.total = 0

    def observe(self, microseconds: int) -> None:
        with self._lock:
            self._estimator.observe(microseconds)
            self.count += 1
            self.total += microseconds

    def snapshot(self) -> tuple[int, int, list[tuple[float, float]]]:
        """(count, sum, [(quantile, value), ...]) at this moment; a value is NaN when the window is empty."""
        with self._lock:
            return self.count, self.total, [(q, float(self._estimator.query(q))) for q, _ in self._quantiles]
