"""The response cache in front of the batcher: keys, backends, and failures as misses.

Which answers may be reused: an answer is keyed by the cache namespace, the model, the
version number, the version's *generation*, the request parameters that could reach the
model, and the input arrays (``servekit.cache.codec``). A generation counts the loads of a
model version in one process (``ModelVersion.generation``): a reload is a new generation, so it
never sees answers of the copy it replaced. The first load of each version is shared by the
workers of one ``servekit serve`` (they load the same files at start and share the namespace
``serve`` picks); a later load is private to the process that made it, because workers
reload independently and their second loads may come from different files. ``serve`` picks
a fresh namespace at each start, so a Redis that outlives the server never answers from
older model files.

A cache failure (Redis down, slow, full, a corrupt value) is a miss, never an error: it is
counted, logged at most once per ``LOG_INTERVAL_S``, and the cache is left alone for
``RETRY_AFTER_S`` so that a dead Redis costs one timeout per interval, not one per request.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, Protocol

from servekit.cache.codec import decode_outputs, encode_outputs, request_key
from servekit.cache.memory import MemoryBackend
from servekit.cache.redis_backend import RedisBackend
from servekit.observability.metrics import record_cache_error
from servekit.types import Arrays

if TYPE_CHECKING:
    from servekit.config import ServerSettings

__all__ = ["LOG_INTERVAL_S", "RETRY_AFTER_S", "CacheBackend", "ResponseCache", "create_cache"]

log = logging.getLogger("servekit.cache")

RETRY_AFTER_S = 1.0
LOG_INTERVAL_S = 30.0


class CacheBackend(Protocol):
    name: str
    remote: bool  # True: stores go to the network in the background, off the request's path

    async def get(self, key: bytes) -> bytes | None: ...

    async def set(self, key: bytes, value: bytes, ttl_s: float | None) -> None: ...

    async def close(self) -> None: ...


class ResponseCache:
    def __init__(self, backend: CacheBackend, namespace: str | None = None) -> None:
        self.backend = backend
        self.namespace = namespace or secrets.token_hex(8)
        self._down_until = 0.0
        self._last_logged = -LOG_INTERVAL_S
        self._pending: set[asyncio.Task[None]] = set()

    def identity(self, model: str, version: int, generation: int) -> bytes:
        """What names one loaded copy (``generation``) of a model version across the processes that may
        share answers."""
        owner = 0 if generation == 1 else os.getpid()
        return f"{self.namespace}\0{model}\0{version}\0{generation}\0{owner}".encode()

    def key(self, model: str, version: int, generation: int, inputs: Arrays, parameters: Mapping[str, Any]) -> bytes:
        """The key of one request's answer on the given loaded copy of a model version."""
        return request_key(self.identity(model, version, generation), inputs, parameters)

    async def get(self, key: bytes) -> Arrays | None:
        """The cached outputs under ``key``, or None (a miss, or any failure)."""
        if time.monotonic() < self._down_until:
            return None
        try:
            value = await self.backend.get(key)
            return None if value is None else decode_outputs(value)
        except Exception as error:
            self._failed("get", error)
            return None

    async def put(self, key: bytes, outputs: Arrays, ttl_s: float | None) -> None:
        """Store outputs under ``key``; a remote store runs in the background. Never raises."""
        if time.monotonic() < self._down_until:
            return
        value = encode_outputs(outputs)
        if value is None:
            return
        if not self.backend.remote:
            await self._set(key, value, ttl_s)
            return
        task = asyncio.ensure_future(self._set(key, value, ttl_s))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _set(self, key: bytes, value: bytes, ttl_s: float | None) -> None:
        try:
            await self.backend.set(key, value, ttl_s)
        except Exception as error:
            self._failed("set", error)

    def _failed(self, operation: Literal["get", "set"], error: Exception) -> None:
        record_cache_error(operation)
        now = time.monotonic()
        self._down_until = now + RETRY_AFTER_S
        if now - self._last_logged >= LOG_INTERVAL_S:
            self._last_logged = now
            log.warning("response cache (%s) failed on %s, serving without it for now: %s: %s",
                        self.backend.name, operation, type(error).__name__, error)

    async def close(self) -> None:
        """Let background stores finish (briefly), then close the backend."""
        if self._pending:
            await asyncio.wait(self._pending, timeout=1.0)
        try:
            await self.backend.close()
        except Exception as error:
            log.debug("closing the response cache failed: %s", error)


def create_cache(settings: ServerSettings) -> ResponseCache:
    """The cache ``settings.cache_url`` names: memory:// (bounded by ``cache_max_bytes``) or Redis."""
    url = settings.cache_url
    memory = url.startswith("memory://")
    backend: CacheBackend = MemoryBackend(settings.cache_max_bytes) if memory else RedisBackend(url)
    return ResponseCache(backend, settings.cache_namespace)
