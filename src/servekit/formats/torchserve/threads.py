"""How many intra-op threads a TorchServe handler's torch uses on servekit's instance threads.

TorchServe runs each worker in a process of its own, with torch's default: one intra-op thread
per core. In servekit the handler shares its process with the event loop that reads requests
and writes answers, and torch's default turns out to hurt there: torch parallelizes even tiny
operations (softmax over an 8 x 2 batch forks across every core), and its OpenMP threads spin
on the cores the event loop needs. Measured on a 2-core machine with the tiny text handler of
the tests (32 connections): 1.1k req/s and p99 109 ms with the default against 3.9k req/s and
p99 23 ms with one intra-op thread.

So each instance thread runs the handler with ``max(1, (cores - 1) // instances)`` threads:
the event loop keeps a core, the instances share the rest. Left alone when the user chose:
``OMP_NUM_THREADS`` or ``MKL_NUM_THREADS`` set, or a handler whose ``initialize`` called
``torch.set_num_threads`` (its count is then applied on the instance threads too, where
TorchServe would have run it on the same thread as ``initialize``).

torch keeps the count per thread once a thread has used it (OpenMP's per-thread setting), and
``torch.set_num_threads`` is also the default of threads that start using torch later: a
process-wide knob, which is why the count is set on the instance threads only, once each.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["TorchThreads"]

_USER_SETTINGS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


class TorchThreads:
    """The decision for one runtime: ``around_initialize`` while it loads, ``on_this_thread`` per call."""

    def __init__(self, instances: int) -> None:
        self._instances = max(instances, 1)
        self._count: int | None = None
        self._applied = threading.local()

    def around_initialize(self, initialize: Callable[[], Any]) -> None:
        """Run the handler's initialize and decide the count (None: leave torch alone)."""
        before = _torch_threads()
        initialize()
        after = _torch_threads()
        if after is None or any(os.environ.get(name) for name in _USER_SETTINGS):
            self._count = None
        elif before is not None and after != before:
            self._count = after  # the handler chose
        else:
            self._count = max(1, ((os.cpu_count() or 1) - 1) // self._instances)

    @property
    def count(self) -> int | None:
        return self._count

    def on_this_thread(self) -> None:
        """Set the count on the calling (instance) thread, once per thread."""
        if self._count is None or getattr(self._applied, "done", False):
            return
        torch = sys.modules.get("torch")
        if torch is not None:
            torch.set_num_threads(self._count)
        self._applied.done = True


def _torch_threads() -> int | None:
    torch = sys.modules.get("torch")  # the handler imported it, or it is not used
    return int(torch.get_num_threads()) if torch is not None else None
