"""RedisBackend and ResponseCache against a real redis-server; failures are misses."""

from __future__ import annotations

import asyncio
import time

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


def test_a_dead_redis_is_a_quick_miss_then_the_cache_comes_back(redis_server: RedisProcess) -> None:
    outputs = {"y": np.arange(3, dtype=np.float32)}

    async def body() -> None:
        cache = ResponseCache(RedisBackend(redis_server.url))
        try:
            await cache.put(b"key", outputs, ttl_s=60)
            await asyncio.sleep(0.05)  # stores to Redis run in the background
            hit = await cache.get(b"key")
            assert hit is not None and hit["y"].tolist() == [0, 1, 2]

            redis_server.stop()
            errors = _errors("get")
            started = time.monotonic()
            assert await cache.get(b"key") is None  # an error, answered as a miss
            assert await cache.get(b"key") is None  # left alone for a while: not even tried
            await cache.put(b"other", outputs, ttl_s=60)
            assert time.monotonic() - started < 1.0
            assert _errors("get") == errors + 1

            redis_server.start()  # a new redis-server on the same port, empty
            cache._down_until = 0.0  # as if RETRY_AFTER_S had passed
            await cache.put(b"key", outputs, ttl_s=60)
            await asyncio.sleep(0.05)
            assert await cache.get(b"key") is not None
        finally:
            await cache.close()

    asyncio.run(body())
