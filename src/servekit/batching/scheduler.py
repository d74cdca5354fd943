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

Deadlines fire on time whatever the instances are doing: a queued request with a deadline
gets a timer that fails it with DeadlineExceeded (504) when the deadline passes before a
batch takes it. ``execution_timeout_s`` bounds one model call: a batch still running past it
fails its requests with DeadlineExceeded, its instance is abandoned (``Runtime.abort``: a model
in its own process is killed; a Python thread cannot be stopped; the late result is dropped and
the runtime unloaded once the call returns) and a fresh instance is loaded in its place with
``respawn`` (given the abandoned runtime, so the new one takes its place and device), so the model
keeps serving at full width. Instance threads are daemons: a call that never returns cannot hold
the process's exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from servekit.batching.queue import BatchPolicy, BatchQueue, Outstanding, QueuedItem, batch_target, should_dispatch
from servekit.batching.stats import ModelStats
from servekit.errors import DeadlineExceeded, InvalidInput, ModelFailed, ModelNotReady, ServekitError
from servekit.observability import metrics, tracing
from servekit.runtimes.base import Runtime, RuntimeRequest
from servekit.types import Arrays

__all__ = ["Batcher", "count_rows", "run_batch"]

log = logging.getLogger("servekit.batching")

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


def run_batch(runtime: Runtime, items: list[QueuedItem], batched: bool,
              phases: list[int] | None = None) -> list[Arrays | ServekitError]:
    """Run one batch; returns one entry per item: its outputs, or (per-request runtimes only)
    the error that fails that item alone.

    Merging runtimes get the items' inputs merged into one set of arrays, run once, and the
    outputs split back per item. Raises ModelFailed when the model raises or returns the
    wrong number of rows: the whole batch fails. ``phases``: when given, a merging runtime
    appends the ``perf_counter_ns`` at which the merge ended and the model returned (Triton's
    compute input / infer / output split; only ``--triton-metrics`` asks).
    """
    if runtime.per_request:
        return _run_per_request(runtime, items)
    parts: list[Arrays] = [item.payload[0] for item in items]
    # One request: no copy. Several: one concatenation per input.
    merged = parts[0] if len(parts) == 1 else {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    if phases is not None:
        phases.append(time.perf_counter_ns())
    try:
        outputs = runtime.predict(merged)
    except ServekitError:
        raise
    except Exception as exc:  # the model's own failure: fail this batch only
        raise _model_failure(runtime, exc, len(items)) from None
    if phases is not None:
        phases.append(time.perf_counter_ns())
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


def _row_chunks(inputs: Arrays, rows: int, max_rows: int) -> list[Arrays]:
    """The inputs cut along their first axis into parts of at most ``max_rows`` rows, in order."""
    return [{name: array[start : start + max_rows] for name, array in inputs.items()}
            for start in range(0, rows, max_rows)]


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


class _Worker:
    """One daemon thread running calls in order; each call's outcome comes back to its event loop.

    Not a ThreadPoolExecutor: its threads are joined at interpreter exit, so one model call that
    never returns would keep a stopped server alive."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[tuple[asyncio.AbstractEventLoop, asyncio.Future[Any], Callable[[], Any]] | None]
        self._jobs = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, call: Callable[[], Any]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._jobs.put((loop, future, call))
        return future

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            loop, future, call = job
            try:
                result = call()
            except BaseException as exc:  # handed to the loop, which decides
                outcome: tuple[Any, BaseException | None] = (None, exc)
            else:
                outcome = (result, None)
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                loop.call_soon_threadsafe(_settle, future, *outcome)

    def stop(self, wait: bool) -> None:
        """Run what was submitted, then end (``wait``: return only once the thread has ended)."""
        self._jobs.put(None)
        if wait:
            self._thread.join()


def _unload_quietly(runtime: Runtime, label: str) -> None:
    try:
        runtime.unload()
    except Exception:
        log.exception("model %s: unloading an abandoned instance failed", label)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class _Instance:
    def __init__(self, runtime: Runtime, label: str, index: int) -> None:
        self.runtime = runtime
        self.worker = _Worker(f"{label}-{index}")
        self.hung = False  # ran past execution_timeout_s: abandoned, replaced


class Batcher:
    """Queue and batch requests for one model version across its instances.

    ``label`` is ``model:version``; its two parts are the labels of the batcher's metrics.
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
        execution_timeout_s: float | None = None,
        respawn: Callable[[Runtime], Runtime] | None = None,
    ) -> None:
        if not runtimes:
            raise ValueError("a batcher needs at least one instance")
        if inline and len(runtimes) > 1:
            raise ValueError("inline execution runs one instance on the event loop; this batcher has "
                             f"{len(runtimes)}")
        if inline and execution_timeout_s is not None:
            raise ValueError("an execution timeout needs thread execution: an inline call cannot be abandoned")
        self.label = label
        model, _, version = label.rpartition(":")
        self._metrics = metrics.for_version(model or version, version if model else "")
        self._queue_depth = 0
        self.policy = policy
        self.stats = stats or ModelStats()
        self._oversize = oversize
        self._timeout_s = timeout_s
        self._queue = BatchQueue(policy)
        self._running_rows = 0  # rows in batches the instances run now
        self._outstanding = Outstanding()  # for policy.hold "adaptive"
        self._instances = [_Instance(runtime, label, i) for i, runtime in enumerate(runtimes)]
        self._started_instances = len(self._instances)
        self._execution_timeout_s = execution_timeout_s
        self._respawn = respawn
        self._replacing: set[asyncio.Task[None]] = set()
        self._idle = list(reversed(self._instances))
        self._timer: asyncio.TimerHandle | None = None
        self.inline = inline
        self.per_request = runtimes[0].per_request
        self._splits_by_rows = runtimes[0].splits_by_rows
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

    @property
    def unavailable_reason(self) -> str | None:
        """Why no instance can serve although the version loaded (each has a reason, e.g. a model
        process that crashed too often: see Runtime.unavailable_reason), or None."""
        reasons = [instance.runtime.unavailable_reason() for instance in self._instances]
        return reasons[0] if reasons and all(reasons) else None

    async def submit(self, inputs: Arrays, deadline: float | None = None, *,
                     parameters: Mapping[str, Any] | None = None, outputs: tuple[str, ...] = (),
                     request_id: str | None = None) -> Arrays:
        """Run one request's inputs through the model; outputs have the request's rows.

        ``parameters``, ``outputs`` (the names asked for) and ``request_id`` reach only a
        per-request runtime (``Runtime.per_request``), which sees each request whole: a request
        with more rows than a batch holds is refused there rather than split, unless the runtime
        answers each row on its own (``Runtime.splits_by_rows``).
        """
        if self._closing:
            raise ModelNotReady(f"model {self.label} is unloading")
        max_rows = self.policy.max_rows
        if self.per_request:
            rows = count_rows(inputs) if max_rows is not None or self.policy.counts_rows else 1
            if max_rows is not None and rows > max_rows and (self._oversize == "reject" or not self._splits_by_rows):
                raise InvalidInput(f"the request has {rows} rows; this model takes at most {max_rows} per request")
            if max_rows is None or rows <= max_rows:
                request = RuntimeRequest(inputs, parameters or {}, outputs, request_id)
                return await self._submit_one(request, rows, deadline)
            # Rows answered each on its own (Runtime.splits_by_rows): each part keeps the request's parameters.
            parts = await asyncio.gather(*(
                self._submit_one(RuntimeRequest(chunk, parameters or {}, outputs, request_id), count_rows(chunk),
                                 deadline) for chunk in _row_chunks(inputs, rows, max_rows)))
            return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
        if max_rows is None:
            return await self._submit_one(inputs, count_rows(inputs) if self.policy.counts_rows else 1, deadline)
        rows = count_rows(inputs)
        if rows == 0:
            raise InvalidInput("the request has no rows (batch dimension is 0)")
        if rows <= max_rows:
            return await self._submit_one(inputs, rows, deadline)
        if self._oversize == "reject":
            raise InvalidInput(f"the request has {rows} rows; this model takes at most {max_rows} per request")
        parts = await asyncio.gather(*(self._submit_one(c, count_rows(c), deadline)
                                       for c in _row_chunks(inputs, rows, max_rows)))
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}

    async def _submit_one(self, inputs: Arrays | RuntimeRequest, rows: int, deadline: float | None) -> Arrays:
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        if self._timeout_s is not None:
            own = now + self._timeout_s
            deadline = own if deadline is None else min(deadline, own)
        future: asyncio.Future[Arrays] = loop.create_future()
        item = QueuedItem(rows=rows, enqueued_at=now, deadline=deadline, payload=(inputs, future))
        if tracing.tracer is not None:
            item.trace = tracing.queued()
        self._queue.put(item)
        if self.policy.hold == "adaptive":
            self._outstanding.saw(self._queue.rows + self._running_rows, now, self.policy.max_delay_s)
        if deadline is not None:  # fires even while every instance is busy and nothing pumps
            item.expiry = loop.call_at(loop.time() + max(0.0, deadline - now), self._expire, item)
        if not self._pump_scheduled:  # at the end of this loop turn, with everything that arrives meanwhile
            self._pump_scheduled = True
            loop.call_soon(self._on_scheduled_pump)
        try:
            return await future
        except asyncio.CancelledError:
            item.abandoned = True  # still queued: it will be dropped, never run
            raise
        finally:
            if item.expiry is not None:
                item.expiry.cancel()

    def _expire(self, item: QueuedItem) -> None:
        """A queued request's deadline passed: answer it now; the queue drops it when it comes up."""
        item.expiry = None
        if not item.taken:
            item.abandoned = True
            with contextlib.suppress(ValueError):  # not there: dropped already (a batch passed it by)
                self._queue.remove(item)
            _fail(item, DeadlineExceeded("the request's deadline passed while it waited in the queue"))
            self._pump()  # the depth changed; and a drained batcher may be done

    def _pump(self) -> None:
        now = time.monotonic()
        adaptive = self.policy.hold == "adaptive"
        while self._idle and should_dispatch(self._queue, now, self.busy, self._running_rows,
                                             self._outstanding.level):
            if adaptive and self._queue.rows < (batch_target(self._queue, self._running_rows,
                                                             self._outstanding.level) or 0):
                self._outstanding.fell_short(self._queue.rows + self._running_rows)  # went at the delay
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
        if len(self._queue) != self._queue_depth:  # a gauge write only when the depth changed
            self._queue_depth = len(self._queue)
            self._metrics.queue_depth.set(self._queue_depth)
            if self._metrics.triton is not None:  # Triton's pending count is the same queue (--triton-metrics)
                self._metrics.triton.pending.set(self._queue_depth)
        if adaptive and not self._queue and not self._running_rows:
            self._outstanding.quiet(now)
        self._check_drained()

    def _on_scheduled_pump(self) -> None:
        self._pump_scheduled = False
        self._pump()

    def _on_timer(self) -> None:
        self._timer = None
        self._pump()

    def _start(self, instance: _Instance, items: list[QueuedItem], now: float) -> None:
        queue_duration = self._metrics.queue_duration
        for item in items:
            item.taken = True
            if item.expiry is not None:
                item.expiry.cancel()
                item.expiry = None
            waited = now - item.enqueued_at
            self.stats.record_queue(int(waited * 1e9))
            queue_duration.observe(waited)
        phases: list[int] | None = None if self._metrics.triton is None else []
        self._running_rows += sum(item.rows for item in items)
        started = time.perf_counter_ns()
        batched = self.policy.max_rows is not None
        if self.inline:  # _pump's loop goes on to the next batch: no _pump from here
            try:
                results = run_batch(instance.runtime, items, batched, phases)
            except Exception as exc:
                self._complete(instance, items, started, None, exc, now, phases)
            else:
                self._complete(instance, items, started, results, None, now, phases)
            return
        work = instance.worker.submit(lambda: run_batch(instance.runtime, items, batched, phases))
        watchdog = None
        if self._execution_timeout_s is not None:
            watchdog = asyncio.get_running_loop().call_later(self._execution_timeout_s, self._hung, instance, items)
        work.add_done_callback(lambda done: self._finish(instance, items, done, started, watchdog, now, phases))

    def _finish(self, instance: _Instance, items: list[QueuedItem], done: asyncio.Future[Any], started: int,
                watchdog: asyncio.TimerHandle | None, taken_at: float, phases: list[int] | None) -> None:
        if watchdog is not None:
            watchdog.cancel()
        if instance.hung:  # its requests were answered at the timeout; the late result is dropped
            log.warning("model %s: a call abandoned after %.3g s returned after all; its instance is unloaded",
                        self.label, self._execution_timeout_s)
            instance.worker.submit(lambda: _unload_quietly(instance.runtime, self.label))
            instance.worker.stop(wait=False)
            return
        error = done.exception()
        self._complete(instance, items, started, None if error is not None else done.result(), error, taken_at,
                       phases)
        self._pump()

    def _hung(self, instance: _Instance, items: list[QueuedItem]) -> None:
        """A model call ran past execution_timeout_s: fail its requests, replace its instance."""
        instance.hung = True
        self._instances.remove(instance)
        self._running_rows -= sum(item.rows for item in items)
        try:
            instance.runtime.abort()  # a model in its own process is killed here; a thread runs on
        except Exception:
            log.exception("model %s: aborting a hung call failed", self.label)
        log.error("model %s: a batch of %d requests ran past execution_timeout_s (%.3g s); its requests fail "
                  "and the instance is replaced", self.label, len(items), self._execution_timeout_s)
        error = DeadlineExceeded(f"the model ran past its execution timeout ({self._execution_timeout_s:g} s)")
        for item in items:
            _fail(item, error)
        task = asyncio.ensure_future(self._replace(instance.runtime))
        self._replacing.add(task)
        task.add_done_callback(self._replacing.discard)
        self._check_drained()

    async def _replace(self, hung: Runtime) -> None:
        """Load a fresh instance for one that hung (in a thread: loading may take long)."""
        if self._respawn is None:
            log.error("model %s: no way to load a replacement instance; %d instance(s) left", self.label,
                      len(self._instances))
        else:
            try:
                runtime = await asyncio.to_thread(self._respawn, hung)
            except Exception:
                log.exception("model %s: loading a replacement instance failed", self.label)
            else:
                if self._closing:
                    await asyncio.to_thread(runtime.unload)
                    return
                fresh = _Instance(runtime, self.label, self._started_instances)
                self._started_instances += 1
                self._instances.append(fresh)
                self._idle.append(fresh)
                log.info("model %s: replacement instance loaded", self.label)
        if not self._instances:  # nothing left to run on: fail what waits rather than hold it forever
            while self._queue:
                for item in self._queue.take_batch(time.monotonic()).items:
                    _fail(item, ModelNotReady(f"model {self.label} has no working instance left"))
        self._pump()

    def _complete(self, instance: _Instance, items: list[QueuedItem], started: int,
                  results: list[Arrays | ServekitError] | None, error: BaseException | None, taken_at: float,
                  phases: list[int] | None) -> None:
        """Record the batch, free the instance, answer its requests (results, or error for all).
        ``taken_at``: when the batch left the queue (monotonic); ``phases``: see ``run_batch``."""
        ended = time.perf_counter_ns()
        elapsed = ended - started
        rows = sum(item.rows for item in items)
        self._running_rows -= rows
        self.stats.record_batch(rows, elapsed, int(time.time() * 1000), ended)
        if log.isEnabledFor(logging.DEBUG):
            self._log_batch(rows, elapsed)
        self._metrics.compute_duration.observe(elapsed / 1e9)
        self._metrics.batch_size.observe(rows)
        if phases is not None:
            self._record_triton(items, results if error is None else None, taken_at, started, phases, ended)
        if tracing.tracer is not None:
            traces = [item.trace for item in items if item.trace is not None]
            if traces:
                tracing.record_batch(traces, self.label, rows, len(items), elapsed, error)
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

    def _record_triton(self, items: list[QueuedItem], results: list[Arrays | ServekitError] | None,
                       taken_at: float, started: int, phases: list[int], ended: int) -> None:
        """Triton's counters for one batch (``--triton-metrics``): only its requests that succeeded add rows
        and times, as Triton counts them; a per-request runtime's whole run counts as infer."""
        triton = self._metrics.triton
        assert triton is not None
        succeeded = [] if results is None else [
            item for item, result in zip(items, results, strict=True) if not isinstance(result, ServekitError)
        ]
        merged, returned = phases if len(phases) == 2 else (started, ended)
        triton.record_batch(len(succeeded), sum(item.rows for item in succeeded),
                            (int((taken_at - item.enqueued_at) * 1e9) for item in succeeded),
                            merged - started, returned - merged, ended - returned)

    def _log_batch(self, rows: int, elapsed_ns: int) -> None:
        """One debug line per batch: its size and compute time, the running mean size and fill."""
        mean = self.stats.mean_batch_size
        fill = self.stats.fill_percent(self.policy.max_rows)
        log.debug("model %s: batch of %d rows in %.2f ms (mean %.1f rows%s)", self.label, rows, elapsed_ns / 1e6,
                  mean, "" if fill is None else f", {fill:.0f}% full")

    def _check_drained(self) -> None:
        if self._drained is not None and not self._queue and self.busy == 0:
            self._drained.set()

    async def close(self) -> None:
        """Stop taking requests, finish everything queued or running, then unload instances."""
        self._closing = True
        self._drained = asyncio.Event()
        self._check_drained()
        await self._drained.wait()
        if self._replacing:
            await asyncio.gather(*self._replacing, return_exceptions=True)
        if self._timer is not None:
            self._timer.cancel()
        for instance in self._instances:
            instance.worker.stop(wait=True)
        # Off the loop, all at once: unloading a model in its own process waits for that process to exit.
        await asyncio.gather(*(asyncio.to_thread(instance.runtime.unload) for instance in self._instances))


def _fail(item: QueuedItem, error: BaseException) -> None:
    future = item.payload[1]
    if not future.done():
        future.set_exception(error)
