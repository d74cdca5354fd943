from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from servekit.grpc.streams import answer_as_completed, answer_in_order


async def _requests(*delays: float) -> AsyncIterator[float]:
    for delay in delays:
        yield delay


async def _sleep_then_echo(delay: float) -> float:
    await asyncio.sleep(delay)
    if delay < 0:
        raise ValueError("negative")
    return delay


class Held:
    """Handlers that start at once and finish only when the test releases them, in the order it chooses:
    the order of answers is decided by the test, never by timers racing on a busy machine."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.started: list[float] = []
        self.all_started = asyncio.Event()
        self.release: dict[float, asyncio.Event] = {}

    async def handle(self, request: float) -> float:
        self.release[request] = asyncio.Event()
        self.started.append(request)
        if len(self.started) == self.count:
            self.all_started.set()
        await self.release[request].wait()
        return request

    async def release_in(self, order: list[float]) -> None:
        """Once every request is in flight, release each in ``order``, letting the stream pass on each answer."""
        await asyncio.wait_for(self.all_started.wait(), 10)  # every request in flight before any answer
        for request in order:
            self.release[request].set()
            for _ in range(100):  # let the stream pass on what this release made ready
                await asyncio.sleep(0)


def test_as_completed_answers_in_completion_order_all_in_flight() -> None:
    async def run() -> list[float]:
        held = Held(3)
        answers: list[float] = []

        async def collect() -> None:
            async for answer in answer_as_completed(_requests(1.0, 2.0, 3.0), held.handle):
                answers.append(answer)

        await asyncio.wait_for(asyncio.gather(collect(), held.release_in([2.0, 3.0, 1.0])), 10)
        return answers

    assert asyncio.run(run()) == [2.0, 3.0, 1.0]


def test_in_order_answers_in_request_order_all_in_flight() -> None:
    async def run() -> tuple[list[float], list[float]]:
        held = Held(3)
        answers: list[float] = []
        when_first_released: list[float] = []

        async def collect() -> None:
            async for answer in answer_in_order(_requests(1.0, 2.0, 3.0), held.handle):
                answers.append(answer)

        async def release() -> None:
            await asyncio.wait_for(held.all_started.wait(), 10)  # concurrent: all three started at once
            for request in (2.0, 3.0):
                held.release[request].set()
            for _ in range(100):
                await asyncio.sleep(0)
            when_first_released.extend(answers)  # 2 and 3 are done, but wait for 1
            held.release[1.0].set()

        await asyncio.wait_for(asyncio.gather(collect(), release()), 10)
        return answers, when_first_released

    answers, before_the_first = asyncio.run(run())
    assert answers == [1.0, 2.0, 3.0] and before_the_first == []


def test_in_order_ends_with_the_error_after_earlier_answers() -> None:
    async def run() -> list[float]:
        answers: list[float] = []
        with pytest.raises(ValueError, match="negative"):
            async for answer in answer_in_order(_requests(0.01, -0.01, 0.01), _sleep_then_echo):
                answers.append(answer)
        return answers

    assert asyncio.run(run()) == [0.01]


def test_closing_the_stream_early_cancels_unfinished_work() -> None:
    cancelled: list[float] = []

    async def tracked(delay: float) -> float:
        try:
            return await _sleep_then_echo(delay)
        except asyncio.CancelledError:
            cancelled.append(delay)
            raise

    async def run() -> None:
        for answer_stream in (answer_as_completed, answer_in_order):
            stream = answer_stream(_requests(0.01, 5.0, 6.0), tracked)
            assert await anext(stream) == 0.01
            await stream.aclose()  # what grpc does when the client cancels
            await asyncio.sleep(0)

    asyncio.run(run())
    assert sorted(cancelled) == [5.0, 5.0, 6.0, 6.0]
