"""The per-model dynamic batcher: queue requests, form batches, run them on instances.

Everything here runs on the event loop thread except ``run_batch``, which runs on
the chosen instance's own thread (one thread per instance, so N instances compute
in parallel while the loop keeps accepting requests). There is no scheduler task:
the queue is pumped at the end of the loop turn in which a request arrives, when a batch
finishes and when the batching delay runs out, so an idle model starts a lone request at
once, and every request that arrived in the same turn (all the connections with data
ready) shares its batch. Pumping at once on arrival instead sent the first request of each
wave alone to an idle model: for a compute-bound model under a closed loop of clients,
a batch of 1 then held the other 31 back for a whole model run (W2 in
benchmarks/results/peers.md).

``inline=True`` (one instance; chosen per model version at load, see
``servekit.batching.execution``) runs ``run_batch`` on the event loop thread instead: for a
model that computes in tens of microseconds the hop to a thread and back costs more than
the model. The delay never applies then, as the instance is never busy when the queue is
pumped.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import defaultdict
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from servekit.batching.queue import BatchPolicy, BatchQueue, QueuedItem, should_dispatch
from servekit.batching.stats import ModelStats
from servekit.errors import DeadlineExceeded, InvalidInput, ModelFailed, ModelNotReady, ServekitError
from servekit.observability import metrics
from servekit.runtimes.base import Arrays, Runtime, RuntimeRequest

__all__ = ["Batcher", "count_rows", "run_batch"]

log = logging.getLogger("servekit.batching")

# Batchers built per label in this process: a model version's load count (see Batcher.generation).
_GENERATIONS: defaultdict[str, itertools.count[int]] = defaultdict(lambda: itertools.count(1))


def count_rows(inputs: Arrays) -> int:
    """Rows in a batched request: the first dimension, which every input must share."""
    rows = {name: array.shape[0] if array.ndim else -1 for name, array in inputs.items()}
    distinct = set(rows.values())
    if -1 in distinct:
        scalar = next(name for name, n in rows.items() if n == -1)
        raise InvalidInput(f"input {scalar!r} has no batch dimension")
    if len(distinct) > 1:
        detail = ", ".join(f"{name}: {n}" for name, n in rows.items())
        raise InvalidInput(f"inputs disagree on the batch size ({detail})")
    return distinct.pop() if distinct else 0


def _model_failure(runtime: Runtime, exc: Exception, requests: int) -> ModelFailed:
    """The error a request sees when the model raised: its type and first line, never a traceback."""
    log.error("model %s failed on a batch of %d requests", runtime.context.model_name, requests, exc_info=exc)
    first_line = (str(exc).splitlines() or [""])[0][:300]  # never echo a traceback or a long dump
    return ModelFailed(f"model raised {type(exc).__name__}: {first_line}")


def run_batch(runtime: Runtime, items: list[QueuedItem], batched: bool) -> list[Arrays | ServekitError]:
    """Run one batch; returns one entry per item: its outputs, or (per-request runtimes only)
    the error that fails that item alone.

    Merging runtimes get the items' inputs merged into one set of arrays, run once, and the
    outputs split back per item. Raises ModelFailed when the model raises or returns the
    wrong number of rows: the whole batch fails.
    """
    if runtime.per_request:
        return _run_per_request(runtime, items)
    parts: list[Arrays] = [item.payload[0] for item in items]
    # One request: no copy. Several: one concatenation per input.
    merged = parts[0] if len(parts) == 1 else {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    try:
        outputs = runtime.predict(merged)
    except ServekitError:
        raise
    except Exception as exc:  # the model's own failure: fail this batch only
        raise _model_failure(runtime, exc, len(items)) from None
    if not batched:
        return [outputs]
    total = sum(item.rows for item in items)
    for name, array in outputs.items():
        got = array.shape[0] if array.ndim else None
        if got != total:
            raise ModelFailed(f"model returned {got} rows for output {name!r}; the batch had {total} rows")
    if len(items) == 1:
        return [outputs]
    results: list[Arrays | ServekitError] = []
    start = 0
    for item in items:
        end = start + item.rows
        results.append({name: array[start:end] for name, array in outputs.items()})
        start = end
    return results


def _run_per_request(runtime: Runtime, items: list[QueuedItem]) -> list[Arrays | ServekitError]:
    """A per-request runtime's batch: each item keeps its own answer or error."""
    requests: list[RuntimeRequest] = [item.payload[0] for item in items]
    try:
        answers = runtime.predict_requests(requests)
    except ServekitError:
        raise
    except Exception as exc:
        raise _model_failure(runtime, exc, len(items)) from None
    if len(answers) != len(items):
        raise ModelFailed(f"model answered {len(answers)} requests; the batch had {len(items)}")
    results: list[Arrays | ServekitError] = []
    for answer in answers:
        if isinstance(answer, ServekitError):
            results.append(answer)
        elif isinstance(answer, Exception):
            results.append(_model_failure(runtime, answer, 1))
        else:
            results.append(answer)
    return results


class _Instance:
    def __init__(self, runtime: Runtime, label: str, index: int) -> None:
        self.runtime = runtime
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{label}-{index}")


class Batcher:
    """Queue and batch requests for one model version across its instances.

    ``label`` is ``model:version``; its two parts are the labels of the batcher's metrics.
    ``generation`` is 1 for the first batcher of a label in this process, 2 for the next (a
    reload), and so on: the response cache keeps the answers of each load apart by it.
    """

    def __init__(
        self,
        label: str,
        runtimes: list[Runtime],
        policy: BatchPolicy,
        *,
        oversize: str = "split",
        timeout_s: float | None = None,
        stats: ModelStats | None = None,
        inline: bool = False,
    ) -> None:
        if not runtimes:
            raise ValueError("a batcher needs at least one instance")
        if inline and len(runtimes) > 1:
            raise ValueError("inline execution runs one instance on the event loop; this batcher has "
                             f"{len(runtimes)}")
        self.label = label
        self.generation = next(_GENERATIONS[label])
        model, _, version = label.rpartition(":")
        self._metrics = metrics.for_version(model or version, version if model else "")
        self._queue_depth = 0
        self.policy = policy
        self.stats = stats or ModelStats()
        self._oversize = oversize
        self._timeout_s = timeout_s
        self._queue = BatchQueue(policy)
        self._instances = [_Instance(runtime, label, i) for i, runtime in enumerate(runtimes)]
        self._idle = list(reversed(self._instances))
        self._timer: asyncio.TimerHandle | None = None
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._deadline_at = 0.0
        self.inline = inline
        self.per_request = runtimes[0].per_request
        self._pump_scheduled = False
        self._closing = False
        self._drained: asyncio.Event | None = None

    @property
    def instance_count(self) -> int:
        return len(self._instances)

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def busy(self) -> int:
        return len(self._instances) - len(self._idle)

    async def submit(self, inputs: Arrays, deadline: float | None = None, *,
                     parameters: Mapping[str, Any] | None = None, outputs: tuple[str, ...] = (),
                     request_id: str | None = None) -> Arrays:
        """Run one request's inputs through the model; outputs have the request's rows.

        ``parameters``, ``outputs`` (the names asked for) and ``request_id`` reach only a
        per-request runtime (``Runtime.per_request``), which sees each request whole: a request
        with more rows than a batch holds is refused there rather than split.
        """
        if self._closing:
            raise ModelNotReady(f"model {self.label} is unloading")
        max_rows = self.policy.max_rows
        if self.per_request:
            rows = 1 if max_rows is None else count_rows(inputs)
            if max_rows is not None and rows > max_rows:
                raise InvalidInput(f"the request has {rows} rows; this model takes at most {max_rows} per request")
            request = RuntimeRequest(inputs, parameters or {}, outputs, request_id)
            return await self._submit_one(request, rows, deadline)
        if max_rows is None:
            return await self._submit_one(inputs, 1, deadline)
        rows = count_rows(inputs)
        if rows == 0:
            raise InvalidInput("the request has no rows (batch dimension is 0)")
        if rows <= max_rows:
            return await self._submit_one(inputs, rows, deadline)
        if self._oversize == "reject":
            raise InvalidInput(f"the request has {rows} rows; this model takes at most {max_rows} per request")
        chunks = [
            {name: array[start : start + max_rows] for name, array in inputs.items()}
            for start in range(0, rows, max_rows)
        ]
        parts = await asyncio.gather(*(self._submit_one(c, count_rows(c), deadline) for c in chunks))
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}

    async def _submit_one(self, inputs: Arrays | RuntimeRequest, rows: int, deadline: float | None) -> Arrays:
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        if self._timeout_s is not None:
            own = now + self._timeout_s
            deadline = own if deadline is None else min(deadline, own)
        future: asyncio.Future[Arrays] = loop.create_future()
        item = QueuedItem(rows=rows, enqueued_at=now, deadline=deadline, payload=(inputs, future))
        self._queue.put(item)
        if not self._pump_scheduled:  # at the end of this loop turn, with everything that arrives meanwhile
            self._pump_scheduled = True
            loop.call_soon(self._on_scheduled_pump)
        try:
            return await future
        except asyncio.CancelledError:
            item.abandoned = True  # still queued: it will be dropped, never run
            raise

    def _pump(self) -> None:
        now = time.monotonic()
        while self._idle and should_dispatch(self._queue, now, self.busy):
            taken = self._queue.take_batch(now)
            for item in taken.expired:
                _fail(item, DeadlineExceeded("the request's deadline passed while it waited in the queue"))
            if taken.items:
                self._start(self._idle.pop(), taken.items, now)
        if self._queue and self._idle and self._timer is None:
            oldest = self._queue.oldest_enqueued_at() or now
            loop = asyncio.get_running_loop()
            wake_at = loop.time() + max(0.0, oldest + self.policy.max_delay_s - now)
            self._timer = loop.call_at(wake_at, self._on_timer)
        if self._queue and not self._idle:
            # Every instance is busy: a waiting request whose deadline passes gets its 504 then,
            # not once an instance is free again (which may be much later).
            for item in self._queue.drop_expired(now):
                _fail(item, DeadlineExceeded("the request's deadline passed while it waited in the queue"))
            self._watch_deadlines(now)
        if len(self._queue) != self._queue_depth:  # a gauge write only when the depth changed
            self._queue_depth = len(self._queue)
            self._metrics.queue_depth.set(self._queue_depth)
        self._check_drained()

    def _watch_deadlines(self, now: float) -> None:
        """Wake the pump at the earliest deadline of a waiting request (one timer, moved earlier as needed)."""
        earliest = self._queue.earliest_deadline()
        if earliest is None or (self._deadline_timer is not None and self._deadline_at <= earliest):
            return
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
        loop = asyncio.get_running_loop()
        self._deadline_at = earliest
        self._deadline_timer = loop.call_at(loop.time() + max(0.0, earliest - now), self._on_deadline)

    def _on_deadline(self) -> None:
        self._deadline_timer = None
        self._pump()

    def _on_scheduled_pump(self) -> None:
        self._pump_scheduled = False
        self._pump()

    def _on_timer(self) -> None:
        self._timer = None
        self._pump()

    def _start(self, instance: _Instance, items: list[QueuedItem], now: float) -> None:
        queue_duration = self._metrics.queue_duration
        for item in items:
            waited = now - item.enqueued_at
            self.stats.record_queue(int(waited * 1e9))
            queue_duration.observe(waited)
        started = time.perf_counter_ns()
        batched = self.policy.max_rows is not None
        if self.inline:  # _pump's loop goes on to the next batch: no _pump from here
            try:
                results = run_batch(instance.runtime, items, batched)
            except Exception as exc:
                self._complete(instance, items, started, None, exc)
            else:
                self._complete(instance, items, started, results, None)
            return
        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(instance.executor, run_batch, instance.runtime, items, batched)
        work.add_done_callback(lambda done: self._finish(instance, items, done, started))

    def _finish(self, instance: _Instance, items: list[QueuedItem], done: Any, started: int) -> None:
        error = done.exception()
        self._complete(instance, items, started, None if error is not None else done.result(), error)
        self._pump()

    def _complete(self, instance: _Instance, items: list[QueuedItem], started: int,
                  results: list[Arrays | ServekitError] | None, error: BaseException | None) -> None:
        """Record the batch, free the instance, answer its requests (results, or error for all)."""
        elapsed = time.perf_counter_ns() - started
        rows = sum(item.rows for item in items)
        self.stats.record_batch(rows, elapsed, int(time.time() * 1000))
        self._metrics.compute_duration.observe(elapsed / 1e9)
        self._metrics.batch_size.observe(rows)
        self._idle.append(instance)
        if error is not None or results is None:
            if not isinstance(error, ServekitError):
                error = ModelFailed(f"batch failed: {type(error).__name__}")
            for item in items:
                _fail(item, error)
        else:
            for item, result in zip(items, results, strict=True):
                if isinstance(result, ServekitError):
                    _fail(item, result)
                elif not (future := item.payload[1]).done():
                    future.set_result(result)

    def _check_drained(self) -> None:
        if self._drained is not None and not self._queue and self.busy == 0:
            self._drained.set()

    async def close(self) -> None:
        """Stop taking requests, finish everything queued or running, then unload instances."""
        self._closing = True
        self._drained = asyncio.Event()
        self._check_drained()
        await self._drained.wait()
        for timer in (self._timer, self._deadline_timer):
            if timer is not None:
                timer.cancel()
        for instance in self._instances:
            instance.executor.shutdown(wait=True)
            instance.runtime.unload()


def _fail(item: QueuedItem, error: BaseException) -> None:
    future = item.payload[1]
    if not future.done():
        future.set_exception(error)
