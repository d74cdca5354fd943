"""The intra-op threads a handler's torch gets on servekit's instance threads (formats/torchserve/threads.py)."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from servekit.formats.torchserve.threads import TorchThreads
from tests.formats.torchserve.mar import require_torch


@pytest.fixture
def torch() -> Iterator[Any]:
    module = require_torch()
    before = module.get_num_threads()
    yield module
    module.set_num_threads(before)  # the count is process-wide for threads that start later


def on_a_new_thread(threads: TorchThreads, torch: Any) -> int:
    seen: list[int] = []

    def run() -> None:
        threads.on_this_thread()
        seen.append(torch.get_num_threads())

    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    return seen[0]


def test_the_event_loop_keeps_a_core_and_instances_share_the_rest(torch: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 9)
    for instances, expected in ((1, 8), (2, 4), (3, 2), (16, 1)):
        threads = TorchThreads(instances)
        threads.around_initialize(lambda: None)
        assert threads.count == expected
    threads = TorchThreads(1)
    threads.around_initialize(lambda: None)
    assert on_a_new_thread(threads, torch) == 8


def test_what_the_user_chose_is_kept(torch: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    threads = TorchThreads(1)
    threads.around_initialize(lambda: None)
    assert threads.count is None
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    chosen = 1 if torch.get_num_threads() != 1 else 2
    threads = TorchThreads(1)
    threads.around_initialize(lambda: torch.set_num_threads(chosen))  # as a handler's initialize may
    assert threads.count == chosen and on_a_new_thread(threads, torch) == chosen


def test_a_handler_without_torch_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    threads = TorchThreads(1)
    threads.around_initialize(lambda: None)
    assert threads.count is None
    threads.on_this_thread()  # nothing to do, nothing raised
