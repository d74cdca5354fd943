"""Triton's summaries across processes: what a worker writes, and the page that merges it with its own."""

from __future__ import annotations

import json
import os
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from servekit.observability import metrics
from servekit.observability.triton_metrics import TritonVersionMetrics, render
from servekit.observability.triton_summaries import DEFAULT_QUANTILES, LatencySummary, SummaryConfig
from servekit.observability.triton_summary_files import Publisher, read_other_processes


def _as_another_process(folder: Path, pid: int) -> Path:
    """Rename this process's file as if process ``pid`` had written it."""
    mine = folder / f"triton_summaries_{os.getpid()}.json"
    moved = folder / f"triton_summaries_{pid}.json"
    mine.replace(moved)
    return moved


def test_a_workers_file_round_trips_counts_sums_and_sketches(tmp_path: Path) -> None:
    summary = LatencySummary(DEFAULT_QUANTILES)
    for microseconds in range(1, 1001):
        summary.observe(microseconds)
    publisher = Publisher(tmp_path, lambda: {("nv_inference_queue_summary_us", "m", "1"): summary})
    publisher.publish()
    assert read_other_processes(tmp_path) == {}  # this process's own file is not "another process"
    written = _as_another_process(tmp_path, 1)
    entries = json.loads(written.read_text())
    assert [(e["family"], e["model"], e["version"], e["count"], e["sum"]) for e in entries] == [
        ("nv_inference_queue_summary_us", "m", "1", 1000, sum(range(1, 1001)))]
    merged = read_other_processes(tmp_path)[("nv_inference_queue_summary_us", "m", "1")]
    assert (merged.count, merged.total, merged.quantiles) == (1000, 500500, (0.5, 0.9, 0.95, 0.99, 0.999))
    assert merged.slices and all(sketch.count > 0 for _, sketch in merged.slices)
    publisher.publish()  # nothing changed since the last write: no new file
    assert not (tmp_path / f"triton_summaries_{os.getpid()}.json").exists()


def test_the_page_adds_other_processes_series_to_its_own(tmp_path: Path) -> None:
    metrics.use_triton_names(True, SummaryConfig(summary_latencies=True))
    try:
        here = TritonVersionMetrics("triton_files", "1")
    finally:
        metrics.use_triton_names(False)
    for microseconds in (100, 200, 300):
        here.record_request(None, microseconds * 1000)
    worker = LatencySummary(DEFAULT_QUANTILES)
    for microseconds in (10_000, 20_000):
        worker.observe(microseconds)
    Publisher(tmp_path, lambda: {("nv_inference_request_summary_us", "triton_files", "1"): worker}).publish()
    _as_another_process(tmp_path, 2)
    (tmp_path / "triton_summaries_3.json").write_text("not json")  # a torn or foreign file is skipped
    text = render([], tmp_path).decode()
    samples = {(s.name, s.labels.get("quantile")): s.value for family in text_string_to_metric_families(text)
               for s in family.samples if s.labels.get("model") == "triton_files"
               and s.name.startswith("nv_inference_request_summary_us")}
    assert samples["nv_inference_request_summary_us_count", None] == 5
    assert samples["nv_inference_request_summary_us_sum", None] == 100 + 200 + 300 + 10_000 + 20_000
    # One window of five values (to within 1 %; DDSketch takes the lower of two neighbours): the median is
    # this process's largest, the 0.999 quantile the worker's 10,000.
    assert 297 <= samples["nv_inference_request_summary_us", "0.5"] <= 303
    assert 9_900 <= samples["nv_inference_request_summary_us", "0.999"] <= 10_100
