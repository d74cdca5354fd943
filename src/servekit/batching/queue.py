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
from typing import Any, Literal

from servekit.errors import QueueFull

__all__ = ["BatchPolicy", "BatchQueue", "Hold", "Outstanding", "QueuedItem", "TakenBatch", "batch_target",
           "should_dispatch"]

# When an idle instance waits for a fuller batch (up to max_delay_s): "never" (servekit's rule: it
# takes what is queued at once), "always" (Triton's dynamic batcher: it waits for max_rows or a
# preferred size), "adaptive" (it waits only for the requests it expects: see ``Outstanding``).
Hold = Literal["never", "adaptive", "always"]


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
    hold: Hold = "never"


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


class Outstanding:
    """How many rows a batch can expect to gather: the recent peak of rows in the batcher's hands
    (queued plus running), for ``hold="adaptive"``.

    A closed loop of N clients keeps about N requests outstanding; once their answers leave, the
    same N come back. So the peak says how many will arrive, where an arrival rate would not: one
    client sending as fast as it can arrives often but never has a companion. The level rises with
    what is seen (``saw``), falls to what was there when a batch went at the delay without filling
    (``fell_short``: some clients left), and is forgotten when nothing was outstanding for a whole
    delay (``quiet``: the traffic stopped, so the next request need not wait for companions).
    Pure: the batcher calls it with its counts and its clock.
    """

    __slots__ = ("empty_since", "level")

    def __init__(self) -> None:
        self.level = 0
        self.empty_since: float | None = None

    def saw(self, outstanding: int, now: float, max_delay_s: float) -> None:
        if self.empty_since is not None:
            if now - self.empty_since >= max_delay_s:
                self.level = 0
            self.empty_since = None
        if outstanding > self.level:
            self.level = outstanding

    def fell_short(self, outstanding: int) -> None:
        self.level = outstanding

    def quiet(self, now: float) -> None:
        """Nothing is queued or running any more (since ``now``, if not already)."""
        if self.empty_since is None:
            self.empty_since = now


def batch_target(queue: BatchQueue, running_rows: int = 0, level: int = 0) -> int | None:
    """The rows the next batch waits for: max_rows or a preferred size (``target_rows``); with
    ``hold="adaptive"``, no more than the rows expected to come (``level`` less ``running_rows``,
    those already in a batch), at least one."""
    target = queue.target_rows()
    if target is not None and queue.policy.hold == "adaptive":
        target = min(target, max(1, level - running_rows))
    return target


def should_dispatch(queue: BatchQueue, now: float, busy_instances: int, running_rows: int = 0,
                    level: int = 0) -> bool:
    """Whether to send a batch now to an idle instance.

    With every instance idle a batch goes at once: a lone request never waits out the
    delay. While some instance is busy, more traffic is likely coming, so we wait up to
    ``max_delay_s`` for the batch to fill to its target. ``policy.hold`` changes the idle case:
    ``"always"`` waits for the target even on an idle model, as Triton's dynamic batcher does;
    ``"adaptive"`` waits only for as many rows as are expected (``batch_target``, ``Outstanding``).
    """
    oldest = queue.oldest_enqueued_at()
    if oldest is None:
        return False
    if (busy_instances == 0 and queue.policy.hold == "never") or queue.policy.max_rows is None:
        return True
    target = batch_target(queue, running_rows, level)
    if target is not None and queue.rows >= target:
        return True
    return now - oldest >= queue.policy.max_delay_s
