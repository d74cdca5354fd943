"""Triton's counters in-process: what one request and one batch add, and how the page writes them."""

from __future__ import annotations

import asyncio

from servekit.errors import InvalidInput, ModelFailed, QueueFull
from servekit.observability import metrics, triton_metrics
from servekit.observability.triton_metrics import FAMILIES, TritonVersionMetrics, collect_in_process, render


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
    TritonVersionMetrics('odd"name\\with\nbreaks', "1").record_request(None, 1_000)
    text = render(collect_in_process()).decode()
    for name in FAMILIES:
        assert f"# TYPE {name} counter\n" in text
    assert 'nv_inference_request_success{model="odd\\"name\\\\with\\nbreaks",version="1"} 1\n' in text
    assert "_total" not in text and "_created" not in text
    assert render([]) == b""


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
