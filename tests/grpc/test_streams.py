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


def test_as_completed_answers_in_completion_order_all_in_flight() -> None:
    async def run() -> list[float]:
        return [answer async for answer in answer_as_completed(_requests(0.06, 0.02, 0.04), _sleep_then_echo)]

    assert asyncio.run(run()) == [0.02, 0.04, 0.06]


def test_in_order_answers_in_request_order_all_in_flight() -> None:
    async def run() -> tuple[list[float], float]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        answers = [answer async for answer in answer_in_order(_requests(0.06, 0.02, 0.04), _sleep_then_echo)]
        return answers, loop.time() - started

    answers, elapsed = asyncio.run(run())
    assert answers == [0.06, 0.02, 0.04] and elapsed < 0.1  # concurrent: ~0.06 s, not 0.12 s


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
