"""A rolling window of recent events (requests, batches) of one model version, for live figures.

``RollingWindow.add`` is on the hot path: two list stores and an index step, no allocation,
no clock read (the caller passes the time it already took). Everything else happens when
someone asks (``recent``), a status page every few seconds, never per request.

Guarantees of ``recent(now_ns)``:

- the values it returns are those of the events of the last ``window_s`` seconds, or of the
  last ``capacity`` events when more than that many happened in the window (then the span
  shrinks to the time those took, so a rate computed from them stays right: it counts less
  history, not fewer events per second);
- the span never reaches back before the window was created, so a version loaded one second
  ago is not said to have had a tenth of its rate;
- like ``ModelStats``, a window is written and read from the event loop thread only: no locks;
  and events are added in the order of their times (each is timed just before it is added).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["WINDOW_S", "Recent", "RollingWindow"]

WINDOW_S = 10.0  # the default window: long enough to smooth a rate, short enough to be live
_NEVER = -(2**62)


@dataclass(frozen=True, slots=True)
class Recent:
    """What a window holds now: the values of its recent events and the seconds they span."""

    values: np.ndarray[Any, np.dtype[np.int64]]
    seconds: float

    @property
    def rate(self) -> float:
        """Events per second over the span (0.0 when there were none)."""
        return len(self.values) / self.seconds if self.seconds > 0 else 0.0

    def mean(self) -> float | None:
        """The mean of the values, or None when there were none."""
        return float(self.values.mean()) if len(self.values) else None


class RollingWindow:
    """The last ``capacity`` events, each a (time in ns, value) pair, in a ring."""

    __slots__ = ("_created_ns", "_last", "_next", "_times", "_values", "window_ns")

    def __init__(self, created_ns: int, window_s: float = WINDOW_S, capacity: int = 4096) -> None:
        if capacity < 1 or window_s <= 0:
            raise ValueError("a rolling window needs capacity >= 1 and window_s > 0")
        self.window_ns = int(window_s * 1e9)
        self._created_ns = created_ns
        # A slot never written holds a time before any window, so no count of the slots in use is kept.
        self._times = [_NEVER] * capacity
        self._values = [0] * capacity
        self._last = capacity - 1
        self._next = 0  # the slot the next event goes in: the oldest event once the ring went round

    def add(self, time_ns: int, value: int) -> None:
        """One event at ``time_ns`` (the clock ``recent`` is asked with) with ``value``."""
        slot = self._next
        self._times[slot] = time_ns
        self._values[slot] = value
        self._next = slot + 1 if slot != self._last else 0

    def recent(self, now_ns: int) -> Recent:
        """The events of the last ``window_s`` seconds up to ``now_ns`` (see the module docstring).

        Costs a binary search and a copy of the events inside the window (next to nothing for an
        idle version). Events are added in time order, so the ring holds two sorted runs: from
        the oldest slot (``_next``) to the end, then from the start to the newest."""
        start = max(now_ns - self.window_ns, self._created_ns)
        times, cut = self._times, self._next
        if times[cut] > start:  # the window held more events than the ring: count over the ring's span
            start = times[cut]
        if times[cut - 1] < start:  # even the newest event is older than the window
            values: list[int] = []
        elif cut == 0:
            values = self._values[bisect.bisect_left(times, start):]
        elif times[0] >= start:  # the window begins in the older run, and takes all of the newer one
            values = self._values[bisect.bisect_left(times, start, cut):] + self._values[:cut]
        else:
            values = self._values[bisect.bisect_left(times, start, 0, cut):cut]
        return Recent(np.array(values, dtype=np.int64), max(now_ns - start, 0) / 1e9)
