"""The load loops of ``servekit bench``: closed loop at a concurrency, open loop at a rate.

A loop knows nothing of protocols: it awaits ``send()``, which returns on success and
raises on failure (the exception's ``kind`` attribute, or its class name, is the error
kind counted). Both loops are bounded: no request starts after the run's duration, and
whatever has not finished ``grace_s`` later is cancelled and counted as an error.

Closed loop: ``concurrency`` workers, each sending its next request when the previous one
answered. Latency runs from send to answer.

Open loop: requests start on a fixed schedule (``rate`` per second) whether or not earlier
ones have answered, and latency runs from the *scheduled* start, so a server (or client)
that falls behind shows it in the latency instead of silently sending less (coordinated
omission).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Measurement", "Send", "closed_loop", "open_loop", "percentile_summary"]

Send = Callable[[], Awaitable[None]]
# An open loop that falls this far behind stops starting requests and counts them as dropped.
_MAX_IN_FLIGHT = 10_000


@dataclass(slots=True)
class Measurement:
    """What one run saw. Latencies are of successful requests only, in seconds."""

    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0
    client_cpu: float = 0.0  # client process CPU seconds per wall second (1.0 = one core busy)

    @property
    def ok(self) -> int:
        return len(self.latencies)

    def record(self, started: float, exc: BaseException | None) -> None:
        if exc is None:
            self.latencies.append(time.perf_counter() - started)
        else:
            self.errors[_kind(exc)] += 1


def percentile_summary(latencies: list[float]) -> dict[str, float | None]:
    """p50/p90/p99/max/mean in milliseconds (None without any success)."""
    if not latencies:
        return {"p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None, "mean_ms": None}
    values = np.asarray(latencies) * 1000.0
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99), "max_ms": float(values.max()),
            "mean_ms": float(values.mean())}


async def closed_loop(send: Send, concurrency: int, duration_s: float, max_requests: int | None = None,
                      grace_s: float = 10.0) -> Measurement:
    """``concurrency`` workers back to back for ``duration_s`` (or until ``max_requests`` started)."""
    measurement = Measurement()
    started_requests = 0
    start = time.perf_counter()
    deadline = start + duration_s

    async def worker() -> None:
        nonlocal started_requests
        while time.perf_counter() < deadline and (max_requests is None or started_requests < max_requests):
            started_requests += 1
            sent = time.perf_counter()
            try:
                await send()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                measurement.record(sent, exc)
            else:
                measurement.record(sent, None)

    await _run_bounded([worker() for _ in range(concurrency)], deadline + grace_s, measurement, start)
    return measurement


async def open_loop(send: Send, rate: float, duration_s: float, max_requests: int | None = None,
                    grace_s: float = 10.0) -> Measurement:
    """Start ``rate`` requests per second on schedule for ``duration_s``; latency from the schedule."""
    measurement = Measurement()
    count = math.floor(rate * duration_s)
    if max_requests is not None:
        count = min(count, max_requests)
    start = time.perf_counter()
    in_flight: set[asyncio.Task[None]] = set()

    async def one(scheduled: float) -> None:
        try:
            await send()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            measurement.record(scheduled, exc)
        else:
            measurement.record(scheduled, None)

    async def schedule() -> None:
        for index in range(count):
            scheduled = start + index / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(in_flight) >= _MAX_IN_FLIGHT:
                measurement.errors["dropped: too many in flight"] += 1
                continue
            task = asyncio.create_task(one(scheduled))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        if in_flight:
            await asyncio.wait(set(in_flight))

    await _run_bounded([schedule()], start + duration_s + grace_s, measurement, start, in_flight)
    return measurement


async def _run_bounded(jobs: list[Awaitable[None]], hard_deadline: float, measurement: Measurement, start: float,
                       in_flight: set[asyncio.Task[None]] | None = None) -> None:
    """Run ``jobs`` until done or ``hard_deadline``; then cancel what is left, including when the caller
    itself is cancelled (the bench's overall time limit), so no request outlives its run."""
    cpu_before = time.process_time()
    tasks = [asyncio.ensure_future(job) for job in jobs]
    pending: set[asyncio.Future[None]] = set(tasks)
    try:
        _, pending = await asyncio.wait(tasks, timeout=max(0.0, hard_deadline - time.perf_counter()))
    finally:
        # Requests cut off: an open loop's are those still in flight; a closed loop has exactly one
        # outstanding per worker still running.
        cut_off = len(in_flight) if in_flight is not None else len(pending)
        stragglers = [*pending, *(in_flight or ())]
        for task in stragglers:
            task.cancel()
        if stragglers:
            await asyncio.gather(*stragglers, return_exceptions=True)
    if cut_off:
        measurement.errors["timeout: no answer by the end of the run"] += cut_off
    measurement.elapsed_s = time.perf_counter() - start
    measurement.client_cpu = (time.process_time() - cpu_before) / max(measurement.elapsed_s, 1e-9)


def _kind(exc: BaseException) -> str:
    kind: Any = getattr(exc, "kind", None)
    return str(kind) if kind else type(exc).__name__
