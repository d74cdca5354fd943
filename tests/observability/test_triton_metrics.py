"""Triton's counters in-process: what one request and one batch add, and how the page writes them."""

from __future__ import annotations

import asyncio
import math
import re

import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from servekit.errors import InvalidInput, ModelFailed, QueueFull
from servekit.observability import metrics, triton_metrics
from servekit.observability.triton_metrics import FAMILIES, TritonVersionMetrics, collect_in_process, render
from servekit.observability.triton_summaries import (
    DEFAULT_QUANTILES,
    LatencySummary,
    SummaryConfig,
    parse_metrics_config,
)


def _rendered(model: str) -> dict[str, int]:
    """name -> value of ``model``'s version "1" samples on a page rendered from this process."""
    text = render(collect_in_process()).decode()
    prefix = f'{{model="{model}",version="1"}} '
    return {line.split("{")[0]: int(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if prefix in line and not line.startswith("#")}


def test_a_request_adds_one_and_a_success_its_whole_microseconds() -> None:
    counters = TritonVersionMetrics("triton_request", "1")
    counters.record_request(None, 2_500_999)
    counters.record_request(None, 1_000)
    counters.record_request(ModelFailed("boom"), 9_000_000)  # a failure counts, its time does not (as Triton)
    counters.record_request(QueueFull("full"), 1_000)
    counters.record_request(asyncio.CancelledError(), 1_000)
    counters.record_request(InvalidInput("bad shape"), 1_000)  # malformed: Triton never counts it
    values = _rendered("triton_request")
    assert values["nv_inference_request_success"] == 2
    assert values["nv_inference_request_duration_us"] == 2_500 + 1
    text = render(collect_in_process()).decode()
    failures = {reason: int(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                for reason in ("OTHER", "BACKEND", "CANCELED", "REJECTED")
                if line.startswith(f'nv_inference_request_failure{{model="triton_request",reason="{reason}",')}
    assert failures == {"OTHER": 0, "BACKEND": 1, "CANCELED": 1, "REJECTED": 1}


def test_a_batch_adds_its_compute_once_per_successful_request() -> None:
    counters = TritonVersionMetrics("triton_batch", "1")
    counters.record_batch(3, 7, [10_000, 20_000, 30_999], 2_000, 50_000, 4_000)
    counters.record_batch(0, 0, [], 1_000, 1_000, 1_000)  # a failed batch: an execution, nothing else
    values = _rendered("triton_batch")
    assert values["nv_inference_exec_count"] == 2
    assert values["nv_inference_count"] == 7
    assert values["nv_inference_queue_duration_us"] == 10 + 20 + 30
    assert values["nv_inference_compute_input_duration_us"] == 3 * 2
    assert values["nv_inference_compute_infer_duration_us"] == 3 * 50
    assert values["nv_inference_compute_output_duration_us"] == 3 * 4


def test_the_page_writes_tritons_names_and_escapes_label_values() -> None:
    odd = TritonVersionMetrics('odd"name\\with\nbreaks', "1")
    odd.record_request(None, 1_000)
    odd.use_cache()
    text = render(collect_in_process()).decode()
    for name, (kind, _) in FAMILIES.items():
        assert f"# TYPE {name} {kind}\n" in text
    assert 'nv_inference_request_success{model="odd\\"name\\\\with\\nbreaks",version="1"} 1\n' in text
    assert "_total" not in text and "_created" not in text
    assert b"nv_inference_request_success" not in render([])  # no counter family given, none written


def test_versions_carry_triton_counters_only_with_the_flag() -> None:
    assert metrics.for_version("triton_off", "1").triton is None
    metrics.use_triton_names(True)
    try:
        assert isinstance(metrics.for_version("triton_on", "1").triton, TritonVersionMetrics)
        assert metrics.for_version("triton_on_unresolved", "").triton is None
    finally:
        metrics.use_triton_names(False)
    assert triton_metrics.is_triton_family("nv_inference_count")
    assert not triton_metrics.is_triton_family("servekit_requests")


def _parsed(text: str) -> dict[str, Metric]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def test_the_pending_count_is_a_gauge_that_follows_the_queue() -> None:
    queued = TritonVersionMetrics("triton_pending", "1")
    assert _rendered("triton_pending")["nv_inference_pending_request_count"] == 0  # there from the start
    queued.pending.set(3)
    assert _rendered("triton_pending")["nv_inference_pending_request_count"] == 3
    queued.pending.set(0)
    assert _rendered("triton_pending")["nv_inference_pending_request_count"] == 0
    family = _parsed(render(collect_in_process()).decode())["nv_inference_pending_request_count"]
    assert family.type == "gauge"


def test_cache_series_exist_only_for_a_cached_version_and_count_hits_and_misses() -> None:
    plain = TritonVersionMetrics("triton_uncached", "1")
    plain.record_request(None, 1_000)
    assert "nv_cache_num_hits_per_model" not in _rendered("triton_uncached")
    cached = TritonVersionMetrics("triton_cached", "1")
    cached.use_cache()
    assert {name: value for name, value in _rendered("triton_cached").items() if name.startswith("nv_cache")} == {
        "nv_cache_num_hits_per_model": 0, "nv_cache_hit_duration_per_model": 0,
        "nv_cache_num_misses_per_model": 0, "nv_cache_miss_duration_per_model": 0}
    cached.record_cache(False, 7_999)
    cached.record_cache(True, 2_000)
    cached.record_cache(True, 500)  # under a microsecond: counted, adds no whole microsecond
    values = _rendered("triton_cached")
    assert values["nv_cache_num_misses_per_model"] == 1
    assert values["nv_cache_miss_duration_per_model"] == 7
    assert values["nv_cache_num_hits_per_model"] == 2
    assert values["nv_cache_hit_duration_per_model"] == 2


def test_summaries_carry_count_sum_and_tritons_quantiles_when_configured() -> None:
    metrics.use_triton_names(True, SummaryConfig(summary_latencies=True))
    try:
        version = TritonVersionMetrics("triton_summary", "1")
        cached = TritonVersionMetrics("triton_summary_cached", "1")
        cached.use_cache()
    finally:
        metrics.use_triton_names(False)
    families = _parsed(render(collect_in_process()).decode())
    queue = families["nv_inference_queue_summary_us"]
    assert queue.type == "summary"
    empty = [s for s in queue.samples if s.labels.get("model") == "triton_summary"]
    assert {s.labels.get("quantile") for s in empty} == {None, "0.5", "0.9", "0.95", "0.99", "0.999"}
    assert all(math.isnan(s.value) for s in empty if "quantile" in s.labels)  # nothing observed yet
    for waited_us in range(1, 101):
        version.record_request(None, 1_000 * waited_us)
        version.record_batch(1, 1, [1_000 * waited_us], 0, 3_000, 0)
    version.record_batch(2, 2, [0, 0], 1_000, 5_000, 2_000)  # a batch of two: each request observes its times
    families = _parsed(render(collect_in_process()).decode())

    def samples(name: str, model: str = "triton_summary") -> dict[str, float]:
        return {s.labels.get("quantile", s.name.rsplit("_", 1)[1]): s.value for s in families[name].samples
                if s.labels["model"] == model}

    request = samples("nv_inference_request_summary_us")
    assert request["count"] == 100 and request["sum"] == sum(range(1, 101))
    # Within 1 % of the true quantile (DDSketch's relative accuracy), in whole microseconds.
    assert 49 <= request["0.5"] <= 51 and 89 <= request["0.9"] <= 91 and 99 <= request["0.999"] <= 100
    assert samples("nv_inference_queue_summary_us")["count"] == 102
    infer = samples("nv_inference_compute_infer_summary_us")
    assert infer["count"] == 102 and infer["sum"] == 100 * 3 + 2 * 5
    assert samples("nv_inference_compute_output_summary_us")["sum"] == 2 * 2
    # As in Triton: a cached version has cache summaries and no request summary.
    assert not samples("nv_inference_request_summary_us", "triton_summary_cached")
    assert samples("nv_cache_hit_summary_per_model", "triton_summary_cached")["count"] == 0


def test_a_summary_forgets_what_left_its_minute_and_keeps_count_and_sum() -> None:
    summary = LatencySummary(DEFAULT_QUANTILES)
    for microseconds in (1000, 2000, 3000):
        summary.observe(microseconds, now=100.0)
    summary.observe(10, now=130.0)
    count, total, quantiles = summary.snapshot(now=140.0)
    assert (count, total) == (4, 6010)
    median = dict(quantiles)[0.5]
    assert 990 <= median <= 1010  # the three from 40 s ago are in the window (to within 1 %)
    count, total, quantiles = summary.snapshot(now=175.0)  # 75 s after the three: out of the window
    assert (count, total) == (4, 6010)
    assert {value for _, value in quantiles} == {10}
    count, total, quantiles = summary.snapshot(now=200.0)  # nothing in the last minute
    assert (count, total) == (4, 6010) and all(math.isnan(value) for _, value in quantiles)


def test_a_batch_s_requests_count_as_that_many_observations_of_its_compute_time() -> None:
    summary = LatencySummary(DEFAULT_QUANTILES)
    summary.observe(500, now=100.0, times=31)
    summary.observe(40_000, now=100.0)
    count, total, quantiles = summary.snapshot(now=101.0)
    assert (count, total) == (32, 31 * 500 + 40_000)
    assert 495 <= dict(quantiles)[0.9] <= 505  # 31 of the 32 observations are 500 us


def test_versions_have_no_summaries_unless_asked() -> None:
    metrics.use_triton_names(True)
    try:
        assert metrics.for_version("triton_no_summary", "1").triton.summaries == {}  # type: ignore[union-attr]
    finally:
        metrics.use_triton_names(False)


def test_the_metrics_config_reads_tritons_keys_and_names_a_bad_item() -> None:
    assert parse_metrics_config([]) == SummaryConfig()
    assert parse_metrics_config(["summary_latencies=true"]).summary_latencies
    assert not parse_metrics_config(["summary_latencies=False"]).summary_latencies
    # The environment variable is comma-separated: an item without "=" continues the quantile list.
    config = parse_metrics_config(["summary_latencies=true", "summary_quantiles=0.9:0.01", "0.5:0.05"])
    assert config.quantiles == ((0.5, 0.05), (0.9, 0.01))
    for bad, named in (("counter_latencies=false", "'counter_latencies': unknown key"),
                       ("summary_latencies=yes", "summary_latencies='yes'"),
                       ("summary_quantiles=0.9", "'0.9' is not QUANTILE:ERROR"),
                       ("summary_quantiles=1.5:0.01", "'1.5:0.01'"),
                       ("0.5:0.05", "expected KEY=VALUE")):
        with pytest.raises(ValueError, match=re.escape(named)):
            parse_metrics_config([bad])
