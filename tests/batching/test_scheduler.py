from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from servekit.batching.queue import BatchPolicy
from servekit.batching.scheduler import Batcher, count_rows
from servekit.config import ModelConfig
from servekit.errors import DeadlineExceeded, InvalidInput, ModelFailed, ModelNotReady, QueueFull
from servekit.runtimes.base import Arrays, Runtime, RuntimeContext, RuntimeRequest


class DoublingRuntime(Runtime):
    """Returns 2*x; records each batch's row count; can be held at a gate or made to misbehave."""

    def __init__(self, gate: threading.Event | None = None, *, fail_on: float | None = None,
                 drop_row: bool = False) -> None:
        super().__init__(RuntimeContext("m", 1, Path("."), Path("1"), ModelConfig()))
        self.gate = gate
        self.fail_on = fail_on
        self.drop_row = drop_row
        self.batches: list[int] = []
        self.running = threading.Semaphore(0)

    def load(self) -> None:
        pass

    def predict(self, inputs: Arrays) -> Arrays:
        x = inputs["x"]
        self.batches.append(int(x.shape[0]))
        self.running.release()
        if self.gate is not None:
            self.gate.wait(timeout=30)
        if self.fail_on is not None and (x == self.fail_on).any():
            raise ValueError("bad value\nTraceback (most recent call last): secret")
        y = x * 2
        return {"y": y[:-1] if self.drop_row else y}


def rows(*values: float) -> Arrays:
    return {"x": np.array([[v] for v in values], dtype=np.float32)}


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), timeout=60))


async def wait_running(runtime: DoublingRuntime) -> None:
    await asyncio.to_thread(runtime.running.acquire, True, 30)


def test_lone_request_on_idle_model_starts_without_waiting_the_delay() -> None:
    async def body() -> None:
        runtime = DoublingRuntime()
        batcher = Batcher("m", [runtime], BatchPolicy(max_rows=8, max_delay_s=30.0))
        task = asyncio.create_task(batcher.submit(rows(1.0)))
        await asyncio.sleep(0)  # the submit runs and schedules the pump at the end of its turn
        await asyncio.sleep(0)  # the pump ran: nothing waits for the 30 s delay
        assert batcher.busy == 1 and batcher.queue_depth == 0
        assert (await task)["y"].tolist() == [[2.0]]

    run(body)


def test_holding_when_idle_keeps_a_lone_request_queued_until_the_batch_fills() -> None:
    """``hold_when_idle`` (Triton's rule): an idle model waits for a full batch (or the delay)."""
    async def body() -> None:
        runtime = DoublingRuntime()
        batcher = Batcher("m", [runtime], BatchPolicy(max_rows=4, max_delay_s=30.0, hold="always"))
        first = asyncio.create_task(batcher.submit(rows(1.0)))
        for _ in range(5):
            await asyncio.sleep(0)
        assert batcher.busy == 0 and batcher.queue_depth == 1  # held, though the model is idle
        rest = [asyncio.create_task(batcher.submit(rows(float(i)))) for i in (2, 3, 4)]
        answers = await asyncio.gather(first, *rest)
        assert [a["y"].tolist() for a in answers] == [[[2.0]], [[4.0]], [[6.0]], [[8.0]]]
        assert runtime.batches == [4]  # one full batch, the moment it filled

    run(body)


def test_adaptive_hold_waits_for_as_many_as_were_outstanding_and_not_for_a_lone_client() -> None:
    async def body() -> None:
        runtime = DoublingRuntime()
        batcher = Batcher("m", [runtime], BatchPolicy(max_rows=32, max_delay_s=30.0, hold="adaptive"))
        assert (await batcher.submit(rows(1.0)))["y"].tolist() == [[2.0]]  # a lone request does not wait
        await asyncio.gather(*(batcher.submit(rows(float(i))) for i in range(4)))  # four clients at once
        first = asyncio.create_task(batcher.submit(rows(1.0)))
        for _ in range(5):
            await asyncio.sleep(0)
        assert batcher.busy == 0 and batcher.queue_depth == 1  # held: the other three are expected
        rest = [asyncio.create_task(batcher.submit(rows(float(i)))) for i in (2, 3, 4)]
        answers = await asyncio.gather(first, *rest)
        assert [a["y"].tolist() for a in answers] == [[[2.0]], [[4.0]], [[6.0]], [[8.0]]]
        assert runtime.batches == [1, 4, 4]  # the second wave ran as one batch, the moment it filled

    run(body)


def test_adaptive_hold_forgets_the_level_when_traffic_stops_or_a_batch_goes_short() -> None:
    async def body() -> None:
        runtime = DoublingRuntime()
        batcher = Batcher("m", [runtime], BatchPolicy(max_rows=32, max_delay_s=0.05, hold="adaptive"))
        await asyncio.gather(*(batcher.submit(rows(float(i))) for i in range(4)))
        await asyncio.sleep(0.2)  # nothing outstanding for longer than the delay: that wave is over
        task = asyncio.create_task(batcher.submit(rows(1.0)))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert batcher.busy == 1 and batcher.queue_depth == 0  # ran at once
        await task
        await asyncio.gather(*(batcher.submit(rows(float(i))) for i in range(4)))
        # Three clients of four come back: the batch waits the delay once, then the level is three.
        await asyncio.gather(*(batcher.submit(rows(float(i))) for i in range(3)))
        await asyncio.gather(*(batcher.submit(rows(float(i))) for i in range(3)))
        assert runtime.batches == [4, 1, 4, 3, 3]

    run(body)


def test_requests_arriving_in_one_loop_turn_on_an_idle_model_share_one_batch() -> None:
    async def body() -> None:
        runtime = DoublingRuntime()
        batcher = Batcher("m", [runtime], BatchPolicy(max_rows=8, max_delay_s=30.0))
        tasks = [asyncio.create_task(batcher.submit(rows(float(i)))) for i in range(3)]
        answers = await asyncio.gather(*tasks)
        assert [a["y"].tolist() for a in answers] == [[[0.0]], [[2.0]], [[4.0]]]
        assert runtime.batches == [3]  # not a batch of 1 and then one of 2

    run(body)


def test_requests_arriving_while_busy_form_one_batch_and_get_their_own_rows() -> None:
    async def body() -> None:
        gate = threading.Event()
        runtime = DoublingRuntime(gate)
        batcher = Batcher("m", [runtime], BatchPolicy(max_rows=16, max_delay_s=0.0))
        first = asyncio.create_task(batcher.submit(rows(1.0)))
        await wait_running(runtime)
        waiting = [asyncio.create_task(batcher.submit(rows(float(i), float(i) + 0.5))) for i in range(2, 6)]
        await asyncio.sleep(0)
        assert batcher.queue_depth == 4
        gate.set()
        results = await asyncio.gather(first, *waiting)
        assert runtime.batches == [1, 8]
        for i, result in zip(range(2, 6), results[1:], strict=True):
            assert result["y"].ravel().tolist() == [2 * i, 2 * i + 1]
        assert batcher.stats.execution_count == 2
        assert batcher.stats.mean_batch_size == 4.5

    run(body)


def test_batches_never_exceed_max_rows() -> None:
    async def body() -> None:
        gate = threading.Event()
        runtime = DoublingRuntime(gate)
        batcher = Batcher("m", [runtime], BatchPolicy(max_rows=4, max_delay_s=0.0))
        first = asyncio.create_task(batcher.submit(rows(0.0)))
        await wait_running(runtime)
        rest = [asyncio.create_task(batcher.submit(rows(float(i)))) for i in range(10)]
        await asyncio.sleep(0)
        gate.set()
        await asyncio.gather(first, *rest)
        assert runtime.batches == [1, 4, 4, 2]

    run(body)


def test_failing_batch_fails_only_its_own_requests_without_leaking_a_traceback() -> None:
    async def body() -> None:
        runtime = DoublingRuntime(fail_on=13.0)
        batcher = Batcher("m", [runtime], BatchPolicy(max_rows=8))
        with pytest.raises(ModelFailed) as caught:
            await batcher.submit(rows(13.0))
        assert "ValueError" in caught.value.message and "bad value" in caught.value.message
        assert "Traceback" not in caught.value.message
        assert (await batcher.submit(rows(1.0)))["y"].tolist() == [[2.0]]

    run(body)


def test_wrong_number_of_output_rows_is_a_model_failure() -> None:
    async def body() -> None:
        batcher = Batcher("m", [DoublingRuntime(drop_row=True)], BatchPolicy(max_rows=8))
        with pytest.raises(ModelFailed, match="returned 1 rows for output 'y'; the batch had 2 rows"):
            await batcher.submit(rows(1.0, 2.0))

    run(body)


def test_full_queue_refuses_with_queue_full() -> None:
    async def body() -> None:
        gate = threading.Event()
        runtime = DoublingRuntime(gate)
        batcher = Batcher("m", [runtime], BatchPolicy(max_rows=8, max_delay_s=1.0, max_queue_size=2))
        running = asyncio.create_task(batcher.submit(rows(0.0)))
        await wait_running(runtime)
        queued = [asyncio.create_task(batcher.submit(rows(1.0))) for _ in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(QueueFull):
            await batcher.submit(rows(2.0))
        gate.set()
        await asyncio.gather(running, *queued)

    run(body)


def test_request_past_its_deadline_never_runs() -> None:
    async def body() -> None:
        gate = threading.Event()
        runtime = DoublingRuntime(gate)
        batcher = Batcher("m", [runtime], BatchPolicy(max_rows=8, max_delay_s=0.0))
        running = asyncio.create_task(batcher.submit(rows(0.0)))
        await wait_running(runtime)
        late = asyncio.create_task(batcher.submit(rows(7.0), deadline=time.monotonic() - 1.0))
        await asyncio.sleep(0)
        gate.set()
        await running
        with pytest.raises(DeadlineExceeded):
            await late
        assert runtime.batches == [1]

    run(body)


def test_a_deadline_passing_while_every_instance_is_busy_fails_the_request_then() -> None:
    async def body() -> None:
        gate = threading.Event()
        runtime = DoublingRuntime(gate)
        batcher = Batcher("m", [runtime], BatchPolicy(max_rows=8, max_delay_s=0.0))
        running = asyncio.create_task(batcher.submit(rows(0.0)))
        await wait_running(runtime)
        kept = asyncio.create_task(batcher.submit(rows(3.0)))
        with pytest.raises(DeadlineExceeded):  # while the gate is still shut: answered at its deadline
            await batcher.submit(rows(7.0), deadline=time.monotonic() + 0.05)
        assert batcher.queue_depth == 1 and not running.done()
        gate.set()
        await asyncio.gather(running, kept)
        assert runtime.batches == [1, 1]

    run(body)


def test_cancelled_request_leaves_the_queue_and_never_runs() -> None:
    async def body() -> None:
        gate = threading.Event()
        runtime = DoublingRuntime(gate)
        batcher = Batcher("m", [runtime], BatchPolicy(max_rows=8, max_delay_s=0.0))
        running = asyncio.create_task(batcher.submit(rows(0.0)))
        await wait_running(runtime)
        abandoned = asyncio.create_task(batcher.submit(rows(5.0)))
        kept = asyncio.create_task(batcher.submit(rows(6.0)))
        await asyncio.sleep(0)
        abandoned.cancel()
        gate.set()
        await asyncio.gather(running, kept)
        assert runtime.batches == [1, 1]

    run(body)


def test_oversized_request_is_split_or_refused() -> None:
    async def body() -> None:
        runtime = DoublingRuntime()
        batcher = Batcher("m", [runtime], BatchPolicy(max_rows=4))
        values = [float(v) for v in range(10)]
        result = await batcher.submit(rows(*values))
        assert result["y"].ravel().tolist() == [2 * v for v in values]
        assert sorted(runtime.batches) == [2, 4, 4]
        strict = Batcher("m", [DoublingRuntime()], BatchPolicy(max_rows=4), oversize="reject")
        with pytest.raises(InvalidInput, match="10 rows; this model takes at most 4"):
            await strict.submit(rows(*values))

    run(body)


def test_instances_run_batches_in_parallel() -> None:
    async def body() -> None:
        gate = threading.Event()
        first, second = DoublingRuntime(gate), DoublingRuntime(gate)
        batcher = Batcher("m", [first, second], BatchPolicy(max_rows=8, max_delay_s=0.0))
        tasks = [asyncio.create_task(batcher.submit(rows(0.0)))]
        await wait_running(first)  # held at the gate; a request arriving now takes the other instance
        tasks.append(asyncio.create_task(batcher.submit(rows(1.0))))
        await wait_running(second)
        assert batcher.busy == 2
        gate.set()
        await asyncio.gather(*tasks)

    run(body)


def test_close_finishes_in_flight_work_then_refuses_new_requests() -> None:
    async def body() -> None:
        gate = threading.Event()
        runtime = DoublingRuntime(gate)
        batcher = Batcher("m", [runtime], BatchPolicy(max_rows=8))
        in_flight = asyncio.create_task(batcher.submit(rows(3.0)))
        await wait_running(runtime)
        closing = asyncio.create_task(batcher.close())
        await asyncio.sleep(0.01)
        assert not closing.done()
        with pytest.raises(ModelNotReady):
            await batcher.submit(rows(1.0))
        gate.set()
        assert (await in_flight)["y"].tolist() == [[6.0]]
        await closing

    run(body)


def test_count_rows_requires_inputs_to_agree() -> None:
    assert count_rows({"a": np.zeros((3, 2)), "b": np.zeros((3,))}) == 3
    with pytest.raises(InvalidInput, match="disagree"):
        count_rows({"a": np.zeros((3, 2)), "b": np.zeros((2,))})
    with pytest.raises(InvalidInput, match="no batch dimension"):
        count_rows({"a": np.float32(1.0) * np.ones(())})


# -- inline execution (servekit.batching.execution chose the event loop) ----------------


def test_inline_runs_every_request_of_one_loop_turn_in_one_batch_on_the_loop_thread() -> None:
    async def body() -> None:
        runtime = DoublingRuntime()
        threads: list[str] = []
        predict = runtime.predict

        def recording(inputs: Arrays) -> Arrays:
            threads.append(threading.current_thread().name)
            return predict(inputs)

        runtime.predict = recording  # type: ignore[method-assign]
        batcher = Batcher("m", [runtime], BatchPolicy(max_rows=8, max_delay_s=30.0), inline=True)
        results = await asyncio.gather(*(batcher.submit(rows(float(i))) for i in range(5)))
        assert [r["y"].tolist() for r in results] == [[[2.0 * i]] for i in range(5)]
        assert runtime.batches == [5]  # one batch, formed at the end of the turn; never the 30 s delay
        assert threads == [threading.current_thread().name]
        assert (await batcher.submit(rows(7.0)))["y"].tolist() == [[14.0]]  # a lone request runs at once
        more = await asyncio.gather(*(batcher.submit(rows(1.0, 2.0)) for _ in range(6)))
        assert len(more) == 6 and runtime.batches[2:] == [8, 4]  # max_rows still holds
        await batcher.close()

    run(body)


def test_inline_failure_fails_its_own_batch_only() -> None:
    async def body() -> None:
        batcher = Batcher("m", [DoublingRuntime(fail_on=3.0)], BatchPolicy(max_rows=8), inline=True)
        outcomes = await asyncio.gather(batcher.submit(rows(3.0)), batcher.submit(rows(1.0)),
                                        return_exceptions=True)
        assert all(isinstance(o, ModelFailed) for o in outcomes)
        assert "secret" not in str(outcomes[0])
        assert (await batcher.submit(rows(1.0)))["y"].tolist() == [[2.0]]
        bad = Batcher("m", [DoublingRuntime(drop_row=True)], BatchPolicy(max_rows=8), inline=True)
        with pytest.raises(ModelFailed, match="rows"):
            await bad.submit(rows(1.0, 2.0))

    run(body)


def test_inline_close_drains_what_is_queued_and_needs_one_instance() -> None:
    async def body() -> None:
        batcher = Batcher("m", [DoublingRuntime()], BatchPolicy(max_rows=None), inline=True)
        pending = [asyncio.create_task(batcher.submit(rows(float(i)))) for i in range(3)]
        await asyncio.sleep(0)
        await batcher.close()
        assert [(await p)["y"].tolist() for p in pending] == [[[0.0]], [[2.0]], [[4.0]]]
        with pytest.raises(ModelNotReady):
            await batcher.submit(rows(1.0))

    run(body)
    with pytest.raises(ValueError, match="one instance"):
        Batcher("m", [DoublingRuntime(), DoublingRuntime()], BatchPolicy(max_rows=8), inline=True)


class PerRequestRuntime(Runtime):
    """A per-request runtime: answers each request with its own parameter, fails the ones asking to."""

    per_request = True

    def __init__(self) -> None:
        super().__init__(RuntimeContext("m", 1, Path("."), Path("1"), ModelConfig()))
        self.batches: list[list[str | None]] = []

    def load(self) -> None:
        pass

    def predict(self, inputs: Arrays) -> Arrays:
        raise AssertionError("a per-request runtime is never given a merged batch")

    def predict_requests(self, requests: Sequence[RuntimeRequest]) -> list[Arrays | Exception]:
        self.batches.append([request.id for request in requests])
        answers: list[Arrays | Exception] = []
        for request in requests:
            if request.parameters.get("fail") == "invalid":
                answers.append(InvalidInput("this request asked to fail"))
            elif request.parameters.get("fail"):
                answers.append(RuntimeError("boom\nTraceback: secret"))
            else:
                scale = float(request.parameters.get("scale", 1))
                answers.append({"y": request.inputs["x"] * scale, "asked": np.array(request.requested_outputs)})
        return answers


def test_per_request_runtime_gets_each_request_whole_and_fails_them_one_by_one() -> None:
    async def body() -> None:
        runtime = PerRequestRuntime()
        batcher = Batcher("m:1", [runtime], BatchPolicy(max_rows=8, max_delay_s=0.05))
        ok, invalid, broken = await asyncio.gather(
            batcher.submit(rows(1.0, 2.0), parameters={"scale": 3}, outputs=("y",), request_id="a"),
            batcher.submit(rows(5.0), parameters={"fail": "invalid"}, request_id="b"),
            batcher.submit(rows(6.0), parameters={"fail": "yes"}, request_id="c"),
            return_exceptions=True,
        )
        assert runtime.batches == [["a", "b", "c"]]  # arrived in one turn: one batch, three requests
        assert isinstance(ok, dict)
        assert ok["y"].tolist() == [[3.0], [6.0]] and ok["asked"].tolist() == ["y"]
        assert isinstance(invalid, InvalidInput) and invalid.message == "this request asked to fail"
        assert isinstance(broken, ModelFailed) and "boom" in broken.message and "secret" not in broken.message
        with pytest.raises(InvalidInput, match="at most 8"):  # never split: the model sees requests whole
            await batcher.submit(rows(*range(9)))
        await batcher.close()

    run(body)


def test_a_per_request_runtime_whose_rows_are_independent_gets_a_large_request_in_parts() -> None:
    class RowWise(PerRequestRuntime):
        splits_by_rows = True

        def __init__(self) -> None:
            super().__init__()
            self.parts: list[int] = []

        def predict_requests(self, requests: Sequence[RuntimeRequest]) -> list[Arrays | Exception]:
            self.parts += [len(request.inputs["x"]) for request in requests]
            return super().predict_requests(requests)

    async def body() -> None:
        runtime = RowWise()
        batcher = Batcher("m:1", [runtime], BatchPolicy(max_rows=4))
        answer = await batcher.submit(rows(*range(10)), parameters={"scale": 2}, outputs=("y",), request_id="big")
        assert answer["y"].ravel().tolist() == [2.0 * v for v in range(10)]  # each part kept the parameters
        assert sorted(runtime.parts) == [2, 4, 4]
        strict = Batcher("m:1", [RowWise()], BatchPolicy(max_rows=4), oversize="reject")
        with pytest.raises(InvalidInput, match="10 rows; this model takes at most 4"):
            await strict.submit(rows(*range(10)))
        await batcher.close()
        await strict.close()

    run(body)


def test_per_request_runtime_answering_the_wrong_number_of_requests_fails_the_batch() -> None:
    class Short(PerRequestRuntime):
        def predict_requests(self, requests: Sequence[RuntimeRequest]) -> list[Arrays | Exception]:
            return super().predict_requests(requests)[1:]

    async def body() -> None:
        batcher = Batcher("m:1", [Short()], BatchPolicy(max_rows=8))
        with pytest.raises(ModelFailed, match="answered 0 requests; the batch had 1"):
            await batcher.submit(rows(1.0))
        await batcher.close()

    run(body)


def test_a_queued_deadline_fires_while_every_instance_is_busy() -> None:
    async def body() -> None:
        gate = threading.Event()
        runtime = DoublingRuntime(gate)
        batcher = Batcher("m:1", [runtime], BatchPolicy(max_rows=1))
        running = asyncio.create_task(batcher.submit(rows(1.0)))
        await wait_running(runtime)
        with pytest.raises(DeadlineExceeded, match="waited in the queue"):
            await batcher.submit(rows(2.0), deadline=time.monotonic() + 0.05)
        assert not running.done() and not gate.is_set()  # answered while the instance was still busy
        gate.set()
        assert (await running)["y"].tolist() == [[2.0]]
        assert runtime.batches == [1]  # the expired request never ran
        await batcher.close()

    run(body)


def test_a_call_past_the_execution_timeout_fails_its_requests_and_its_instance_is_replaced() -> None:
    async def body() -> None:
        gate = threading.Event()
        hung = DoublingRuntime(gate)
        fresh: list[DoublingRuntime] = []

        def respawn(replaced: Runtime) -> Runtime:
            assert replaced is hung  # told which instance it replaces (its context: its place and device)
            fresh.append(DoublingRuntime())
            return fresh[-1]

        batcher = Batcher("m:1", [hung], BatchPolicy(max_rows=4), execution_timeout_s=0.1, respawn=respawn)
        with pytest.raises(DeadlineExceeded, match=r"execution timeout \(0.1 s\)"):
            await batcher.submit(rows(1.0))
        answer = await batcher.submit(rows(3.0))  # the hung call is still running: a new instance answers
        assert answer["y"].tolist() == [[6.0]] and len(fresh) == 1 and fresh[0].batches == [1]
        assert batcher.instance_count == 1 and not gate.is_set()
        await batcher.close()  # does not wait for the abandoned call
        gate.set()

    run(body)


class AbortableRuntime(DoublingRuntime):
    """Like a model in its own process: abort() ends the call in flight (here: opens its gate)."""

    def __init__(self, gate: threading.Event) -> None:
        super().__init__(gate)
        self.aborts = 0
        self.unloaded = threading.Event()
        self.reason: str | None = None

    def abort(self) -> None:
        self.aborts += 1
        assert self.gate is not None
        self.gate.set()

    def unload(self) -> None:
        self.unloaded.set()

    def unavailable_reason(self) -> str | None:
        return self.reason


def test_an_abandoned_instance_is_aborted_and_unloaded_once_its_call_ends() -> None:
    async def body() -> None:
        hung = AbortableRuntime(threading.Event())
        batcher = Batcher("m:1", [hung], BatchPolicy(max_rows=4), execution_timeout_s=0.1,
                          respawn=lambda replaced: DoublingRuntime())
        with pytest.raises(DeadlineExceeded):
            await batcher.submit(rows(1.0))
        assert hung.aborts == 1
        assert await asyncio.to_thread(hung.unloaded.wait, 10)  # the aborted call returned: unloaded
        assert (await batcher.submit(rows(2.0)))["y"].tolist() == [[4.0]]
        await batcher.close()
        assert hung.aborts == 1

    run(body)


def test_a_version_is_unavailable_only_when_every_instance_says_why() -> None:
    async def body() -> None:
        first, second = AbortableRuntime(threading.Event()), AbortableRuntime(threading.Event())
        batcher = Batcher("m:1", [first, second], BatchPolicy(max_rows=4))
        assert batcher.unavailable_reason is None
        first.reason = "crashed"
        assert batcher.unavailable_reason is None  # the other instance still serves
        second.reason = "crashed too"
        assert batcher.unavailable_reason == "crashed"
        await batcher.close()

    run(body)


def test_without_a_replacement_what_waits_fails_once_no_instance_is_left() -> None:
    async def body() -> None:
        gate = threading.Event()
        runtime = DoublingRuntime(gate)
        batcher = Batcher("m:1", [runtime], BatchPolicy(max_rows=1), execution_timeout_s=0.1)
        first = asyncio.create_task(batcher.submit(rows(1.0)))
        await wait_running(runtime)
        waiting = asyncio.create_task(batcher.submit(rows(2.0)))
        with pytest.raises(DeadlineExceeded):
            await first
        with pytest.raises(ModelNotReady, match="no working instance left"):
            await waiting
        assert batcher.instance_count == 0
        gate.set()
        await batcher.close()

    run(body)
