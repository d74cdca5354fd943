"""Batch formation, pure: no I/O, no event loop, no clocks of its own.

Invariants:
- items leave the queue in the order they entered (ordering is kept);
- ``take_batch`` never returns more rows than ``max_rows`` (an item larger than
  ``max_rows`` must be split before it is queued);
- ``take_batch`` returns at least one item when the queue holds a live one;
- an expired or abandoned item is never returned in a batch.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from servekit.errors import QueueFull

__all__ = ["BatchPolicy", "BatchQueue", "QueuedItem", "TakenBatch", "should_dispatch"]


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    """max_rows None means each batch is exactly one request (no batching). ``counts_rows``: with
    max_rows None, requests still carry a batch dimension, so an item counts its rows (Triton's
    inference_count) although it runs alone; otherwise such an item is one row."""

    max_rows: int | None
    max_delay_s: float = 0.0
    preferred_sizes: tuple[int, ...] = ()
    max_queue_size: int = 2048
    counts_rows: bool = False
    hold_when_idle: bool = False  # wait for a full batch (up to max_delay_s) even with every instance idle


@dataclass(eq=False, slots=True)
class QueuedItem:
    rows: int
    enqueued_at: float
    deadline: float | None = None
    payload: Any = None
    abandoned: bool = False  # the caller stopped waiting (disconnect, cancellation, its deadline passed)
    taken: bool = False  # a batch took it: running or done
    expiry: Any = None  # the scheduler's timer for ``deadline`` (opaque here)
    trace: Any = None  # the request's trace context when tracing is on (opaque here)


@dataclass(slots=True)
class TakenBatch:
    items: list[QueuedItem]
    expired: list[QueuedItem]
    abandoned: list[QueuedItem]

    @property
    def rows(self) -> int:
        return sum(item.rows for item in self.items)


class BatchQueue:
    def __init__(self, policy: BatchPolicy) -> None:
        self.policy = policy
        self._items: deque[QueuedItem] = deque()
        self._rows = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def rows(self) -> int:
        return self._rows

    def oldest_enqueued_at(self) -> float | None:
        return self._items[0].enqueued_at if self._items else None

    def put(self, item: QueuedItem) -> None:
        """Queue one item; QueueFull when the bound is reached."""
        if len(self._items) >= self.policy.max_queue_size:
            raise QueueFull(f"queue is full ({self.policy.max_queue_size} requests waiting); retry later")
        self._items.append(item)
        self._rows += item.rows

    def remove(self, item: QueuedItem) -> None:
        """Take ``item`` out wherever it waits (its deadline passed); the others keep their order."""
        self._items.remove(item)
        self._rows -= item.rows

    def target_rows(self) -> int | None:
        """How many rows the next batch aims for, given what is queued now."""
        max_rows = self.policy.max_rows
        if max_rows is None:
            return None
        reachable = min(self._rows, max_rows)
        fitting = [size for size in self.policy.preferred_sizes if size <= reachable]
        return fitting[-1] if fitting else max_rows

    def take_batch(self, now: float) -> TakenBatch:
        """Pop the next batch from the front, dropping expired and abandoned items on the way."""
        taken = TakenBatch([], [], [])
        target = self.target_rows()
        rows = 0
        while self._items:
            item = self._items[0]
            if item.abandoned:
                self._pop()
                taken.abandoned.append(item)
                continue
            if item.deadline is not None and item.deadline < now:
                self._pop()
                taken.expired.append(item)
                continue
            if target is None:
                if taken.items:
                    break
            elif taken.items and (rows + item.rows > target or rows >= target):
                break
            self._pop()
            taken.items.append(item)
            rows += item.rows
            if target is None:
                break
        return taken

    def _pop(self) -> None:
        item = self._items.popleft()
        self._rows -= item.rows


def should_dispatch(queue: BatchQueue, now: float, busy_instances: int) -> bool:
    """Whether to send a batch now to an idle instance.

    With every instance idle a batch goes at once: a lone request never waits out the
    delay. While some instance is busy, more traffic is likely coming, so we wait up to
    ``max_delay_s`` for the batch to fill to its target. ``policy.hold_when_idle`` waits for
    the target even on an idle model, as Triton's dynamic batcher does.
    """
    oldest = queue.oldest_enqueued_at()
    if oldest is None:
        return False
    if (busy_instances == 0 and not queue.policy.hold_when_idle) or queue.policy.max_rows is None:
        return True
    target = queue.target_rows()
    if target is not None and queue.rows >= target:
        return True
    return now - oldest >= queue.policy.max_delay_s
