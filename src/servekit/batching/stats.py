"""Per-model counters: requests, batches, queue and compute time; and the recent ones
(``servekit.batching.rolling``) behind the live figures of the status page.

Updated only from the event loop thread, so no locks are needed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from servekit.batching.rolling import RollingWindow

__all__ = ["BatchSizeStats", "ModelStats"]


@dataclass(slots=True)
class BatchSizeStats:
    count: int = 0
    compute_ns: int = 0


@dataclass(slots=True)
class ModelStats:
    success_count: int = 0
    success_ns: int = 0
    failure_count: int = 0
    failure_ns: int = 0
    inference_count: int = 0  # rows run, as Triton counts them
    execution_count: int = 0  # batches run
    queue_count: int = 0
    queue_ns: int = 0
    compute_count: int = 0
    compute_ns: int = 0
    cache_hit_count: int = 0
    cache_hit_ns: int = 0  # time spent asking the response cache, for answers it had
    cache_miss_count: int = 0
    cache_miss_ns: int = 0  # time spent asking it for answers it did not have
    last_inference_ms: int = 0
    batch_sizes: dict[int, BatchSizeStats] = field(default_factory=dict)
    # The last seconds' requests (value: duration in ns, negative for a failure) and batches
    # (value: rows), timed with time.perf_counter_ns.
    recent_requests: RollingWindow = field(default_factory=lambda: RollingWindow(time.perf_counter_ns()))
    recent_batches: RollingWindow = field(default_factory=lambda: RollingWindow(time.perf_counter_ns()))

    def record_batch(self, rows: int, compute_ns: int, end_ms: int, ended_ns: int) -> None:
        """One batch of ``rows`` that ran ``compute_ns`` and ended at ``end_ms`` (wall clock, ms)
        and ``ended_ns`` (time.perf_counter_ns)."""
        self.recent_batches.add(ended_ns, rows)
        self.execution_count += 1
        self.inference_count += rows
        self.compute_count += 1
        self.compute_ns += compute_ns
        self.last_inference_ms = end_ms
        size = self.batch_sizes.setdefault(rows, BatchSizeStats())
        size.count += 1
        size.compute_ns += compute_ns

    def record_queue(self, queue_ns: int) -> None:
        self.queue_count += 1
        self.queue_ns += queue_ns

    def record_cache(self, hit: bool, lookup_ns: int) -> None:
        if hit:
            self.cache_hit_count += 1
            self.cache_hit_ns += lookup_ns
        else:
            self.cache_miss_count += 1
            self.cache_miss_ns += lookup_ns

    def record_request(self, ok: bool, started_ns: int, ended_ns: int) -> None:
        """One request answered (``ok``) or failed, timed with time.perf_counter_ns."""
        duration_ns = ended_ns - started_ns
        if ok:
            self.success_count += 1
            self.success_ns += duration_ns
            self.recent_requests.add(ended_ns, duration_ns)
        else:
            self.failure_count += 1
            self.failure_ns += duration_ns
            self.recent_requests.add(ended_ns, -duration_ns)  # one window for both: one store per request

    @property
    def mean_batch_size(self) -> float:
        return self.inference_count / self.execution_count if self.execution_count else 0.0

    def fill_percent(self, max_batch_size: int | None) -> float | None:
        """How full batches are on average: mean batch size / ``max_batch_size``, in percent
        (None when the model does not batch)."""
        if not max_batch_size:
            return None
        return 100.0 * self.mean_batch_size / max_batch_size

    def live(self, now_ns: int) -> dict[str, float | None]:
        """The last seconds (``RollingWindow``) up to ``now_ns`` (time.perf_counter_ns): requests
        and failures per second, p50 and p99 latency of both in ms (None without requests), batches
        per second and their mean size in rows (None without batches)."""
        requests = self.recent_requests.recent(now_ns)
        batches = self.recent_batches.recent(now_ns)
        durations = np.abs(requests.values)
        p50, p99 = np.percentile(durations, (50, 99)) / 1e6 if len(durations) else (None, None)
        failures = int((requests.values < 0).sum())
        return {
            "requests_per_s": requests.rate,
            "failures_per_s": failures / requests.seconds if requests.seconds > 0 else 0.0,
            "p50_ms": None if p50 is None else float(p50),
            "p99_ms": None if p99 is None else float(p99),
            "batches_per_s": batches.rate,
            "mean_batch_size": batches.mean(),
        }

    def summary(self, max_batch_size: int | None = None) -> dict[str, Any]:
        """A readable summary (counts, means in milliseconds; with ``max_batch_size``, the batch
        fill ratio in percent)."""

        def mean_ms(total_ns: int, count: int) -> float:
            return round(total_ns / count / 1e6, 4) if count else 0.0

        return {
            "requests": self.success_count + self.failure_count,
            "failures": self.failure_count,
            "batches": self.execution_count,
            "rows": self.inference_count,
            "mean_batch_size": round(self.mean_batch_size, 3),
            "batch_fill_percent": None if (fill := self.fill_percent(max_batch_size)) is None else round(fill, 1),
            "mean_queue_ms": mean_ms(self.queue_ns, self.queue_count),
            "mean_compute_ms": mean_ms(self.compute_ns, self.compute_count),
        }
