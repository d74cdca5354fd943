from __future__ import annotations

import pytest

from servekit.batching.queue import BatchPolicy, BatchQueue, Outstanding, QueuedItem, batch_target, should_dispatch
from servekit.errors import QueueFull


def make_queue(**policy: object) -> BatchQueue:
    return BatchQueue(BatchPolicy(**{"max_rows": 8, **policy}))  # type: ignore[arg-type]


def put(queue: BatchQueue, rows: int, at: float = 0.0, **extra: object) -> QueuedItem:
    item = QueuedItem(rows=rows, enqueued_at=at, **extra)  # type: ignore[arg-type]
    queue.put(item)
    return item


def test_take_batch_keeps_order_and_respects_max_rows() -> None:
    queue = make_queue(max_rows=8)
    items = [put(queue, rows) for rows in (3, 3, 3, 1)]
    first = queue.take_batch(now=1.0)
    assert first.items == items[:2]
    assert first.rows == 6
    second = queue.take_batch(now=1.0)
    assert second.items == items[2:]
    assert len(queue) == 0 and queue.rows == 0


def test_take_batch_returns_one_item_per_batch_without_batching() -> None:
    queue = make_queue(max_rows=None)
    items = [put(queue, 1) for _ in range(3)]
    assert queue.take_batch(now=0).items == [items[0]]
    assert len(queue) == 2


def test_expired_and_abandoned_items_are_dropped_never_returned() -> None:
    queue = make_queue()
    expired = put(queue, 1, deadline=0.5)
    abandoned = put(queue, 1, abandoned=True)
    live = put(queue, 1, deadline=5.0)
    taken = queue.take_batch(now=1.0)
    assert taken.items == [live]
    assert taken.expired == [expired]
    assert taken.abandoned == [abandoned]


def test_preferred_batch_size_caps_the_batch_when_reachable() -> None:
    queue = make_queue(max_rows=32, preferred_sizes=(4, 8))
    for _ in range(11):
        put(queue, 1)
    assert queue.target_rows() == 8
    assert queue.take_batch(now=0).rows == 8
    assert queue.target_rows() == 32  # 3 left: no preferred size reachable, take what there is
    assert queue.take_batch(now=0).rows == 3


def test_put_refuses_past_the_bound() -> None:
    queue = make_queue(max_queue_size=2)
    put(queue, 1)
    put(queue, 1)
    with pytest.raises(QueueFull) as caught:
        put(queue, 1)
    assert caught.value.http_status == 503
    assert caught.value.headers() == {"Retry-After": "1"}


def test_idle_model_dispatches_a_lone_request_at_once() -> None:
    queue = make_queue(max_delay_s=10.0)
    put(queue, 1, at=0.0)
    assert should_dispatch(queue, now=0.0, busy_instances=0)


def test_busy_model_waits_for_the_delay_or_a_full_batch() -> None:
    queue = make_queue(max_rows=4, max_delay_s=0.010)
    put(queue, 1, at=0.0)
    assert not should_dispatch(queue, now=0.005, busy_instances=1)
    assert should_dispatch(queue, now=0.010, busy_instances=1)
    for _ in range(3):
        put(queue, 1, at=0.001)
    assert should_dispatch(queue, now=0.002, busy_instances=1)


def test_holding_when_idle_waits_for_the_delay_or_a_full_or_preferred_batch() -> None:
    """Triton's dynamic batcher (config.pbtxt models): an idle model waits too."""
    queue = make_queue(max_rows=4, max_delay_s=0.010, hold="always")
    put(queue, 1, at=0.0)
    assert not should_dispatch(queue, now=0.0, busy_instances=0)
    assert not should_dispatch(queue, now=0.009, busy_instances=0)
    assert should_dispatch(queue, now=0.010, busy_instances=0)
    for _ in range(3):
        put(queue, 1, at=0.001)
    assert should_dispatch(queue, now=0.002, busy_instances=0)  # full: no reason to wait
    preferred = make_queue(max_rows=8, max_delay_s=0.010, preferred_sizes=(2,), hold="always")
    put(preferred, 1, at=0.0)
    assert not should_dispatch(preferred, now=0.001, busy_instances=0)
    put(preferred, 1, at=0.001)
    assert should_dispatch(preferred, now=0.001, busy_instances=0)
    no_delay = make_queue(max_rows=4, max_delay_s=0.0, hold="always")
    put(no_delay, 1, at=0.0)
    assert should_dispatch(no_delay, now=0.0, busy_instances=0)  # delay 0: nothing to wait for


def test_adaptive_hold_waits_only_for_the_rows_recently_outstanding() -> None:
    queue = make_queue(max_rows=32, max_delay_s=0.010, hold="adaptive")
    put(queue, 1, at=0.0)
    assert should_dispatch(queue, now=0.0, busy_instances=0, level=1)  # a lone client: nobody to wait for
    assert should_dispatch(queue, now=0.0, busy_instances=0, level=0)
    assert not should_dispatch(queue, now=0.0, busy_instances=0, level=4)  # four were outstanding lately
    assert not should_dispatch(queue, now=0.009, busy_instances=0, level=4)
    assert should_dispatch(queue, now=0.010, busy_instances=0, level=4)  # the delay still bounds the wait
    for _ in range(3):
        put(queue, 1, at=0.001)
    assert should_dispatch(queue, now=0.002, busy_instances=0, level=4)  # all four came
    assert batch_target(queue, running_rows=0, level=100) == 32  # never past max_rows
    # Rows running on another instance will not join this batch: they come back after it.
    assert batch_target(queue, running_rows=3, level=4) == 1
    assert should_dispatch(queue, now=0.002, busy_instances=1, running_rows=3, level=7)


def test_outstanding_rises_with_what_is_seen_and_falls_when_a_batch_went_short_or_traffic_stopped() -> None:
    outstanding = Outstanding()
    for count in (1, 5, 3, 32, 7):
        outstanding.saw(count, now=0.0, max_delay_s=0.010)
    assert outstanding.level == 32
    outstanding.fell_short(20)  # a batch went at the delay with 20: twelve clients left
    assert outstanding.level == 20
    outstanding.quiet(now=1.0)
    outstanding.quiet(now=1.5)  # still quiet since 1.0
    outstanding.saw(1, now=1.005, max_delay_s=0.010)  # back within one delay: the same clients
    assert outstanding.level == 20
    outstanding.quiet(now=2.0)
    outstanding.saw(1, now=2.02, max_delay_s=0.010)  # quiet for a whole delay: the wave is over
    assert outstanding.level == 1


def test_empty_queue_never_dispatches() -> None:
    assert not should_dispatch(make_queue(), now=0, busy_instances=0)
