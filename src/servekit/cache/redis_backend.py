"""A Redis cache (the ``redis`` package's asyncio client), shared by workers and replicas.

Timeouts are short and nothing is retried: the cache must never make a request slower
than running the model would, so a slow or absent Redis is a failure the caller turns
into a miss (see ``servekit.cache.response``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["KEY_PREFIX", "RedisBackend"]

KEY_PREFIX = b"servekit:cache:"


class RedisBackend:
    name = "redis"
    remote = True

    def __init__(self, url: str, timeout_s: float = 0.25) -> None:
        try:
            from redis.asyncio import Redis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff
        except ImportError:
            raise RuntimeError("a redis:// cache needs the redis package: pip install 'servekit[redis]'") from None
        self.url = url
        self._client: Any = Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0),
        )

    async def get(self, key: bytes) -> bytes | None:
        value = await self._client.get(KEY_PREFIX + key)
        return None if value is None else bytes(value)

    async def set(self, key: bytes, value: bytes, ttl_s: float | None) -> None:
        await self._client.set(KEY_PREFIX + key, value, px=None if ttl_s is None else max(1, int(ttl_s * 1000)))

    async def close(self) -> None:
        await self._client.aclose()
