from __future__ import annotations

import asyncio
import time

import pytest

from servekit.cache.memory import ENTRY_OVERHEAD_BYTES, MemoryBackend


def test_least_recently_used_entries_leave_first_within_the_byte_bound() -> None:
    async def body() -> None:
        cache = MemoryBackend(max_bytes=3 * (1 + 100 + ENTRY_OVERHEAD_BYTES))
        for key in (b"a", b"b", b"c"):
            await cache.set(key, b"v" * 100, None)
        assert await cache.get(b"a") is not None  # a is now the most recent
        await cache.set(b"d", b"v" * 100, None)
        assert await cache.get(b"b") is None
        assert [await cache.get(k) is not None for k in (b"a", b"c", b"d")] == [True, True, True]
        assert cache.size_bytes <= cache.max_bytes and len(cache) == 3

    asyncio.run(body())


def test_a_value_larger_than_the_bound_is_not_stored_and_evicts_nothing() -> None:
    async def body() -> None:
        cache = MemoryBackend(max_bytes=1000)
        await cache.set(b"small", b"x", None)
        await cache.set(b"huge", b"x" * 1000, None)
        assert await cache.get(b"huge") is None and await cache.get(b"small") == b"x"

    asyncio.run(body())


def test_replacing_a_key_keeps_the_byte_count_right() -> None:
    async def body() -> None:
        cache = MemoryBackend(max_bytes=10_000)
        await cache.set(b"k", b"x" * 100, None)
        await cache.set(b"k", b"y" * 10, None)
        assert cache.size_bytes == 1 + 10 + ENTRY_OVERHEAD_BYTES and await cache.get(b"k") == b"y" * 10

    asyncio.run(body())


def test_entries_expire_after_their_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    async def body() -> None:
        cache = MemoryBackend(max_bytes=10_000)
        await cache.set(b"k", b"v", ttl_s=10)
        assert await cache.get(b"k") == b"v"
        later = time.monotonic() + 11
        monkeypatch.setattr(time, "monotonic", lambda: later)
        assert await cache.get(b"k") is None and len(cache) == 0 and cache.size_bytes == 0

    asyncio.run(body())
