"""Answering a stream of requests with many in flight at once.

Each request becomes its own task as soon as it is read, so requests of one stream
wait in the batch queue together and with other traffic. At most ``MAX_IN_FLIGHT``
requests of one stream are unanswered at a time; past that, reading pauses (HTTP/2 flow
control then slows the client). When the call ends early (the client cancelled, its
deadline passed, an error ended it), every unfinished task is cancelled: requests still
in a batch queue are dropped there and never run.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import TypeVar

__all__ = ["MAX_IN_FLIGHT", "answer_as_completed", "answer_in_order"]

MAX_IN_FLIGHT = 1024

Request = TypeVar("Request")
Response = TypeVar("Response")


async def answer_as_completed(
    requests: AsyncIterable[Request], handle: Callable[[Request], Awaitable[Response]]
) -> AsyncIterator[Response]:
    """Yield each answer as soon as it is ready (completion order). ``handle`` should not raise:
    an exception from it ends the stream."""
    finished: asyncio.Queue[asyncio.Task[Response] | None] = asyncio.Queue()
    slots = asyncio.Semaphore(MAX_IN_FLIGHT)
    running: set[asyncio.Task[Response]] = set()

    async def read() -> None:
        async for request in requests:
            await slots.acquire()
            task = asyncio.ensure_future(handle(request))
            running.add(task)
            task.add_done_callback(finished.put_nowait)

    reader = asyncio.ensure_future(read())
    reader.add_done_callback(lambda _: finished.put_nowait(None))  # no more tasks will start
    try:
        reading = True
        while reading or running:
            task = await finished.get()
            if task is None:
                reading = False
                reader.result()  # the request stream failed: end this call with that error
                continue
            running.discard(task)
            slots.release()
            yield task.result()
    finally:
        reader.cancel()
        for task in running:
            task.cancel()


async def answer_in_order(
    requests: AsyncIterable[Request], handle: Callable[[Request], Awaitable[Response]]
) -> AsyncIterator[Response]:
    """Yield answers in request order, each as soon as it and those before it are ready.
    An exception from ``handle`` ends the stream after the answers before it were sent."""
    started: asyncio.Queue[asyncio.Task[Response] | None] = asyncio.Queue()
    slots = asyncio.Semaphore(MAX_IN_FLIGHT)
    running: list[asyncio.Task[Response]] = []

    async def read() -> None:
        async for request in requests:
            await slots.acquire()
            task = asyncio.ensure_future(handle(request))
            running.append(task)
            started.put_nowait(task)

    reader = asyncio.ensure_future(read())
    reader.add_done_callback(lambda _: started.put_nowait(None))
    try:
        while (task := await started.get()) is not None:
            response = await task
            running.remove(task)
            slots.release()
            yield response
        reader.result()
    finally:
        reader.cancel()
        for task in running:
            task.cancel()
