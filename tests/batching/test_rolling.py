"""The rolling window behind the status page's live figures (pure: times are given, no clock)."""

from __future__ import annotations

import pytest

from servekit.batching.rolling import RollingWindow
from servekit.batching.stats import ModelStats

S = 1_000_000_000  # one second in ns


def test_counts_only_the_last_window_s_seconds() -> None:
    window = RollingWindow(created_ns=0, window_s=10)
    for second in range(30):  # one event a second, each worth its second
        window.add(second * S, second)
    recent = window.recent(30 * S)
    assert sorted(recent.values.tolist()) == list(range(20, 30))
    assert recent.seconds == 10
    assert recent.rate == 1.0
    assert recent.mean() == 24.5


def test_a_young_window_spans_its_life_not_the_whole_window() -> None:
    window = RollingWindow(created_ns=100 * S, window_s=10)
    for _ in range(4):
        window.add(101 * S, 7)
    recent = window.recent(102 * S)  # created 2 s ago: 4 events in 2 s, not in 10
    assert recent.seconds == 2
    assert recent.rate == 2.0


def test_an_overflowing_window_keeps_the_rate_right() -> None:
    window = RollingWindow(created_ns=0, window_s=10, capacity=100)
    for index in range(1000):  # 1000 events a second for a second: ten times the ring
        window.add(5 * S + index * S // 1000, 1)
    recent = window.recent(6 * S)
    assert len(recent.values) == 100  # the last 100 events, over the 0.1 s they took
    assert recent.seconds == pytest.approx(0.1, rel=0.02)
    assert recent.rate == pytest.approx(1000, rel=0.02)


def test_an_empty_window_has_no_mean_and_no_rate() -> None:
    window = RollingWindow(created_ns=0)
    recent = window.recent(S)
    assert recent.rate == 0.0
    assert recent.mean() is None
    with pytest.raises(ValueError, match="capacity"):
        RollingWindow(created_ns=0, capacity=0)


def test_model_stats_live_figures() -> None:
    stats = ModelStats(recent_requests=RollingWindow(0), recent_batches=RollingWindow(0))
    assert stats.live(S) == {"requests_per_s": 0.0, "failures_per_s": 0.0, "p50_ms": None, "p99_ms": None,
                             "batches_per_s": 0.0, "mean_batch_size": None}
    for index in range(99):  # 99 answered in 1..99 ms, 1 failed after 500 ms, over 10 s
        stats.record_request(True, 0, (index + 1) * 1_000_000)
    stats.record_request(False, S, S + 500_000_000)
    stats.record_batch(4, 1000, 0, 2 * S)
    stats.record_batch(8, 1000, 0, 3 * S)
    live = stats.live(10 * S)
    assert live["requests_per_s"] == 10.0
    assert live["failures_per_s"] == 0.1
    assert live["p50_ms"] == pytest.approx(50.5)
    assert live["p99_ms"] is not None and 99 < live["p99_ms"] <= 500
    assert live["batches_per_s"] == 0.2
    assert live["mean_batch_size"] == 6.0
    assert stats.success_count == 99 and stats.failure_count == 1  # the totals still count


def test_a_ring_that_went_round_still_reads_in_time_order() -> None:
    window = RollingWindow(created_ns=0, window_s=5, capacity=8)
    for second in range(11):  # slots reused: the ring's oldest slot is in its middle
        window.add(second * S, second)
    assert window.recent(10 * S).values.tolist() == [5, 6, 7, 8, 9, 10]
    assert window.recent(12 * S).values.tolist() == [7, 8, 9, 10]
    assert window.recent(30 * S).values.tolist() == []


@pytest.mark.parametrize("events", [0, 1, 3, 7, 8, 9, 12, 16, 23])
def test_recent_agrees_with_a_plain_filter_wherever_the_ring_stands(events: int) -> None:
    window = RollingWindow(created_ns=0, window_s=4, capacity=8)
    for second in range(events):  # one event a second, each worth its second
        window.add(second * S, second)
    kept = list(range(max(0, events - 8), events))  # what the ring still holds
    for now in range(max(events - 1, 0), events + 6):  # asked after the newest event, as a page asks
        start = max(now - 4, kept[0] if len(kept) == 8 else 0)
        assert window.recent(now * S).values.tolist() == [v for v in kept if v >= start], (events, now)
