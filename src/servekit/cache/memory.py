"""An in-memory LRU cache bounded in bytes, one per process (each worker has its own)."""

from __future__ import annotations

import time
from collections import OrderedDict

__all__ = ["ENTRY_OVERHEAD_BYTES", "MemoryBackend"]

# Rough bookkeeping cost of one entry (dict slot, tuple, bytes headers), counted against the bound.
ENTRY_OVERHEAD_BYTES = 200


class MemoryBackend:
    """Least recently used entries leave first once the total passes ``max_bytes``.

    Called only from the event loop thread, so no locks. A value bigger than the whole bound
    is not stored.
    """

    name = "memory"
    remote = False

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[bytes, tuple[bytes, float | None]] = OrderedDict()
        self.size_bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: bytes) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        value, expires = entry
        if expires is not None and expires <= time.monotonic():
            self._remove(key)
            return None
        self._entries.move_to_end(key)
        return value

    async def set(self, key: bytes, value: bytes, ttl_s: float | None) -> None:
        size = len(key) + len(value) + ENTRY_OVERHEAD_BYTES
        if size > self.max_bytes:
            return
        if key in self._entries:
            self._remove(key)
        self._entries[key] = (value, None if ttl_s is None else time.monotonic() + ttl_s)
        self.size_bytes += size
        while self.size_bytes > self.max_bytes:
            self._remove(next(iter(self._entries)))

    async def close(self) -> None:
        self._entries.clear()
        self.size_bytes = 0

    def _remove(self, key: bytes) -> None:
        value, _ = self._entries.pop(key)
        self.size_bytes -= len(key) + len(value) + ENTRY_OVERHEAD_BYTES
