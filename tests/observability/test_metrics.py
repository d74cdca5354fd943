"""Metric objects and the hooks that feed them, in-process (prometheus-client's default registry)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from prometheus_client import REGISTRY
from starlette.testclient import TestClient

from servekit.batching.queue import BatchPolicy
from servekit.batching.scheduler import Batcher
from servekit.config import ServerSettings
from servekit.http import create_app
from servekit.observability import metrics
from tests.batching.test_scheduler import DoublingRuntime, rows
from tests.builders import write_repository


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_every_metric_is_named_servekit_and_in_base_units() -> None:
    ours = [m for m in REGISTRY.collect() if m.name.startswith("servekit_")]
    names = {m.name for m in ours}
    assert {"servekit_requests", "servekit_request_duration_seconds", "servekit_queue_duration_seconds",
            "servekit_compute_duration_seconds", "servekit_batch_size", "servekit_queue_depth",
            "servekit_inflight_requests", "servekit_model_ready", "servekit_model_instances",
            "servekit_model_load_duration_seconds", "servekit_cache_hits", "servekit_cache_misses",
            "servekit_cache_errors"} <= names
    for metric in ours:
        if metric.type == "histogram" and metric.name != "servekit_batch_size":
            assert metric.name.endswith("_seconds"), metric.name


def test_label_children_are_resolved_once_per_version() -> None:
    assert metrics.for_version("m", "1") is metrics.for_version("m", "1")
    assert metrics.for_version("m", "1") is not metrics.for_version("m", "2")


def test_record_request_counts_by_protocol_and_outcome() -> None:
    version = metrics.for_version("counted", "3")
    version.record_request("grpc", "success", 0.002)
    version.record_request("grpc", "success", 0.004)
    version.record_request("http", "queue_full", 0.001)
    labels = {"model": "counted", "version": "3"}
    assert sample("servekit_requests_total", **labels, protocol="grpc", outcome="success") == 2
    assert sample("servekit_requests_total", **labels, protocol="http", outcome="queue_full") == 1
    assert sample("servekit_request_duration_seconds_count", **labels, protocol="grpc") == 2
    assert abs(sample("servekit_request_duration_seconds_sum", **labels, protocol="grpc") - 0.006) < 1e-9


def test_a_loaded_version_has_every_request_and_cache_error_series_at_zero() -> None:
    labels = {"model": "fresh", "version": "1"}
    assert REGISTRY.get_sample_value("servekit_requests_total", {**labels, "protocol": "http",
                                                                  "outcome": "success"}) is None
    metrics.record_model_loaded("fresh", "1", 1, 0.1)
    for protocol in metrics.SERVED_PROTOCOLS:
        for outcome in metrics.REQUEST_OUTCOMES:
            value = REGISTRY.get_sample_value("servekit_requests_total", {**labels, "protocol": protocol,
                                                                          "outcome": outcome})
            assert value == 0, (protocol, outcome)
        assert REGISTRY.get_sample_value("servekit_request_duration_seconds_count",
                                         {**labels, "protocol": protocol}) == 0
    for operation in ("get", "set"):
        assert REGISTRY.get_sample_value("servekit_cache_errors_total", {"operation": operation}) is not None
    metrics.for_version("fresh", "1").record_request("grpc", "queue_full", 0.001)  # the same child counts on
    assert sample("servekit_requests_total", **labels, protocol="grpc", outcome="queue_full") == 1
    metrics.record_model_unloaded("fresh", "1", 1)


def test_request_outcomes_cover_every_error_a_resolved_request_can_meet() -> None:
    """Each ServekitError's outcome label is created at load, unless it can only happen before a request
    has a version (an unknown model or version) or never to an inference request (management's errors)."""
    from servekit import errors
    from servekit.observability.requests import outcome_of

    before_a_version_or_not_inference = {"model_not_found", "version_not_found", "unauthenticated",
                                         "permission_denied", "conflict", "config_error"}
    classes = [cls for cls in vars(errors).values()
               if isinstance(cls, type) and issubclass(cls, errors.ServekitError)]
    outcomes = {outcome_of(cls("x"))[0] for cls in classes}
    assert outcomes - before_a_version_or_not_inference == set(metrics.REQUEST_OUTCOMES) - {"success", "cancelled"}
    assert outcome_of(asyncio.CancelledError())[0] in metrics.REQUEST_OUTCOMES
    assert outcome_of(None)[0] in metrics.REQUEST_OUTCOMES


def test_a_reload_swaps_in_before_the_old_copy_retires_and_the_gauges_stay_right() -> None:
    labels = {"model": "swapped", "version": "1"}
    metrics.record_model_loaded("swapped", "1", 2, 0.5)
    assert sample("servekit_model_ready", **labels) == 1
    assert sample("servekit_model_instances", **labels) == 2
    metrics.record_model_loaded("swapped", "1", 3, 0.25)  # the reload is serving ...
    metrics.record_model_unloaded("swapped", "1", 2)  # ... then the old copy retires
    assert sample("servekit_model_ready", **labels) == 1
    assert sample("servekit_model_instances", **labels) == 3
    assert sample("servekit_model_load_duration_seconds", **labels) == 0.25
    metrics.record_model_unloaded("swapped", "1", 3)
    assert sample("servekit_model_ready", **labels) == 0
    assert sample("servekit_model_instances", **labels) == 0


def test_the_batcher_records_queue_compute_batch_size_and_depth() -> None:
    labels = {"model": "batched", "version": "7"}

    async def body() -> None:
        batcher = Batcher("batched:7", [DoublingRuntime()], BatchPolicy(max_rows=8))
        await asyncio.gather(*(batcher.submit(rows(float(n))) for n in range(5)))
        await batcher.close()

    asyncio.run(body())
    batches = sample("servekit_batch_size_count", **labels)
    assert 1 <= batches <= 5
    assert sample("servekit_batch_size_sum", **labels) == 5  # every row ran once
    assert sample("servekit_compute_duration_seconds_count", **labels) == batches
    assert sample("servekit_queue_duration_seconds_count", **labels) == 5  # one per request
    assert sample("servekit_queue_depth", **labels) == 0


def test_http_requests_are_counted_once_with_protocol_and_outcome(tmp_path: Path) -> None:
    write_repository(tmp_path, {"lin": "max_batch_size: 4\n"})
    settings = ServerSettings(repository=tmp_path, default_model="lin")
    expected = {
        ("lin", "1", "http", "success"): 1,
        ("lin", "1", "simple_http", "success"): 1,
        ("lin", "1", "http", "invalid_input"): 1,  # the data plane rejected it: it knows the version
        ("lin", "", "http", "invalid_input"): 1,  # the codec rejected it, before any version
        ("lin", "", "simple_http", "invalid_schema"): 1,
        ("", "", "http", "model_not_found"): 1,  # an unknown name is not a label of its own
        ("nope", "", "http", "model_not_found"): 0,
    }

    def counts() -> dict[tuple[str, str, str, str], float]:
        return {key: sample("servekit_requests_total", model=key[0], version=key[1], protocol=key[2],
                            outcome=key[3]) for key in expected}

    before = counts()
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
    labels = {"model": "lin", "version": "1"}
    with TestClient(create_app(settings)) as client:
        assert client.post("/v2/models/lin/infer", json=body).status_code == 200
        assert client.post("/predict", json={"inputs": [[1, 2, 3, 4]]}).status_code == 200
        wrong = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}
        assert client.post("/v2/models/lin/infer", json=wrong).status_code == 400
        assert client.post("/v2/models/lin/infer", content=b"{not json").status_code == 400
        assert client.post("/predict", json={"rows": []}).status_code == 422
        assert client.post("/v2/models/nope/infer", json=body).status_code == 404
        assert sample("servekit_model_ready", **labels) == 1
        assert sample("servekit_model_instances", **labels) == 1
    after = counts()
    assert {key: after[key] - before[key] for key in expected} == expected
    assert sample("servekit_request_duration_seconds_count", **labels, protocol="http") >= 2
    assert sample("servekit_inflight_requests", **labels) == 0
    assert sample("servekit_model_ready", **labels) == 0  # unloaded at shutdown
    assert sample("servekit_model_instances", **labels) == 0
