"""RedisBackend and ResponseCache against a real redis-server; failures are misses."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
from prometheus_client import REGISTRY

from servekit.cache import RedisBackend, ResponseCache

from .redis_process import RedisProcess


def _errors(operation: str) -> float:
    return REGISTRY.get_sample_value("servekit_cache_errors_total", {"operation": operation}) or 0.0


def test_set_get_and_ttl(redis_server: RedisProcess) -> None:
    async def body() -> None:
        backend = RedisBackend(redis_server.url)
        try:
            await backend.set(b"k", b"value", ttl_s=None)
            await backend.set(b"short", b"gone soon", ttl_s=0.05)
            assert await backend.get(b"k") == b"value"
            assert await backend.get(b"missing") is None
            await asyncio.sleep(0.15)
            assert await backend.get(b"short") is None
        finally:
            await backend.close()

    asyncio.run(body())


async def stored(cache: ResponseCache, key: bytes, timeout_s: float = 30.0) -> Any:
    """What ``cache`` answers for ``key`` once the background store has reached Redis."""
    deadline = time.monotonic() + timeout_s
    while (found := await cache.get(key)) is None:
        assert time.monotonic() < deadline, "the store never reached Redis"
        await asyncio.sleep(0.01)
    return found


def test_a_dead_redis_is_a_quick_miss_then_the_cache_comes_back(redis_server: RedisProcess) -> None:
    outputs = {"y": np.arange(3, dtype=np.float32)}

    async def body() -> None:
        cache = ResponseCache(RedisBackend(redis_server.url))
        try:
            await cache.put(b"key", outputs, ttl_s=60)
            hit = await stored(cache, b"key")  # stores to Redis run in the background
            assert hit["y"].tolist() == [0, 1, 2]

            redis_server.stop()
            errors, set_errors = _errors("get"), _errors("set")
            assert await cache.get(b"key") is None  # an error, answered as a miss
            assert await cache.get(b"key") is None  # left alone for a while: not even tried
            await cache.put(b"other", outputs, ttl_s=60)
            await asyncio.sleep(0)  # a store that was tried would be under way now
            assert _errors("get") == errors + 1  # one failed try; the second get and the put never waited on Redis
            assert _errors("set") == set_errors

            redis_server.start()  # a new redis-server on the same port, empty
            # Each connection pooled to the old server fails once (nothing is retried, by design), so
            # store again, as if RETRY_AFTER_S had passed each time, until a store reaches the new server.
            deadline = time.monotonic() + 30
            while True:
                cache._down_until = 0.0
                await cache.put(b"key", outputs, ttl_s=60)
                if cache._pending:
                    await asyncio.wait(cache._pending)
                cache._down_until = 0.0
                if (hit := await cache.get(b"key")) is not None:
                    break
                assert time.monotonic() < deadline, "the cache never came back"
            assert hit["y"].tolist() == [0, 1, 2]
        finally:
            await cache.close()

    asyncio.run(body())
