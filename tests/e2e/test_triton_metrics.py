"""``serve --triton-metrics``: Triton's metric names on the metrics page of a real server, fed by
requests that the official Triton clients sent (tritonclient.http and tritonclient.grpc)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from .harness import ServerProcess
from .repos import FAULTY_MAGIC, write_faulty_model, write_onnx_model
from .scrape import scrape

COUNTERS = ("nv_inference_request_success", "nv_inference_request_failure", "nv_inference_count",
            "nv_inference_exec_count", "nv_inference_request_duration_us", "nv_inference_queue_duration_us",
            "nv_inference_compute_input_duration_us", "nv_inference_compute_infer_duration_us",
            "nv_inference_compute_output_duration_us")
# Sent one after another, so each request is a batch of its own: 1, 1, 1 and 5 rows over HTTP, 2 over gRPC.
HTTP_ROWS = (1, 1, 1, 5)
GRPC_ROWS = 2


def _http_input(rows: int, columns: int = 4) -> httpclient.InferInput:
    tensor = httpclient.InferInput("x", [rows, columns], "FP32")
    tensor.set_data_from_numpy(np.ones((rows, columns), dtype=np.float32), binary_data=True)
    return tensor


@pytest.fixture(scope="module")
def triton_page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    """A server with --triton-metrics after a known mix of requests, and its metrics page then."""
    repository = tmp_path_factory.mktemp("triton-metrics") / "models"
    write_onnx_model(repository)
    write_faulty_model(repository)
    server = ServerProcess(repository, tmp_path_factory.mktemp("logs") / "triton-metrics.log", "--triton-metrics")
    server.start()
    try:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
        for rows in HTTP_ROWS:
            client.infer("onnx_linear", [_http_input(rows)], model_version="1")
        with pytest.raises(InferenceServerException):  # the wrong width: refused before the model, as Triton
            client.infer("onnx_linear", [_http_input(1, columns=3)], model_version="1")
        magic = httpclient.InferInput("x", [1, 1], "FP32")
        magic.set_data_from_numpy(np.array([[FAULTY_MAGIC]], dtype=np.float32))
        with pytest.raises(InferenceServerException):  # the model raises
            client.infer("faulty", [magic], model_version="1")
        with pytest.raises(InferenceServerException):  # no such model: no model, no Triton series
            client.infer("no_such_model", [_http_input(1)])
        client.close()
        grpc_client = grpcclient.InferenceServerClient(server.grpc_url)
        pixels = grpcclient.InferInput("x", [GRPC_ROWS, 4], "FP32")
        pixels.set_data_from_numpy(np.ones((GRPC_ROWS, 4), dtype=np.float32))
        grpc_client.infer("onnx_linear", [pixels], model_version="1")
        grpc_client.close()
        response = httpx.get(server.metrics_url, timeout=10)
        assert response.status_code == 200
        yield server, response.text
    finally:
        server.stop()


_SAMPLE = re.compile(r'^(nv_inference_\w+)\{model="([^"]*)",(?:reason="([A-Z]+)",)?version="([^"]*)"\} (\d+)$',
                     re.MULTILINE)
Key = tuple[str, str, str, str]


def _triton_samples(text: str) -> dict[Key, int]:
    """(name, model, version, reason or "") -> value of every Triton sample, read as Prometheus reads
    the page (the Python parser would rename a counter's samples to ``..._total``)."""
    found: dict[Key, int] = {}
    for name, model, reason, version, value in _SAMPLE.findall(text):
        assert (name, model, version, reason) not in found, f"{name} {model} {version} {reason} twice"
        found[name, model, version, reason] = int(value)
    return found


def _value(samples: dict[Key, int], name: str, model: str, version: str = "1", reason: str = "") -> int:
    assert (name, model, version, reason) in samples, (name, model, version, reason)
    return samples[name, model, version, reason]


def _failures(samples: dict[Key, int], model: str) -> dict[str, int]:
    return {reason: value for (name, have, _, reason), value in samples.items()
            if name == "nv_inference_request_failure" and have == model}


def test_the_counts_match_the_requests_sent(triton_page: tuple[ServerProcess, str]) -> None:
    samples = _triton_samples(triton_page[1])
    requests = len(HTTP_ROWS) + 1
    assert _value(samples, "nv_inference_request_success", "onnx_linear") == requests
    reasons = {"OTHER": 0, "BACKEND": 0, "CANCELED": 0, "REJECTED": 0}
    assert _failures(samples, "onnx_linear") == reasons  # the malformed request is no failure (as in Triton)
    assert _value(samples, "nv_inference_count", "onnx_linear") == sum(HTTP_ROWS) + GRPC_ROWS
    assert _value(samples, "nv_inference_exec_count", "onnx_linear") == requests
    assert _value(samples, "nv_inference_request_success", "faulty") == 0
    assert _failures(samples, "faulty") == {**reasons, "BACKEND": 1}  # the model raised
    assert _value(samples, "nv_inference_exec_count", "faulty") == 1  # the batch ran, and raised
    assert _value(samples, "nv_inference_count", "faulty") == 0
    assert _value(samples, "nv_inference_compute_infer_duration_us", "faulty") == 0  # no success, no time
    # Version 2 of onnx_linear is loaded but never asked: its series are there, at zero.
    assert {value for (_, model, version, _), value in samples.items() if (model, version) == ("onnx_linear", "2")} \
        == {0}
    assert {key[1] for key in samples if key[0] == "nv_inference_request_success"} == {"onnx_linear", "faulty"}


def test_the_microsecond_counters_add_up_per_request(triton_page: tuple[ServerProcess, str]) -> None:
    samples = _triton_samples(triton_page[1])
    parts = [_value(samples, f"nv_inference_{part}_duration_us", "onnx_linear")
             for part in ("queue", "compute_input", "compute_infer", "compute_output")]
    assert all(part == int(part) >= 0 for part in parts)
    assert parts[2] > 0  # the model ran: its time is counted
    # Each request's end-to-end time holds its queue wait and its batch's compute phases.
    assert _value(samples, "nv_inference_request_duration_us", "onnx_linear") >= sum(parts)


def test_the_names_types_and_labels_are_tritons(triton_page: tuple[ServerProcess, str]) -> None:
    text = triton_page[1]
    for name in COUNTERS:
        assert f"# TYPE {name} counter\n" in text
        assert re.search(rf"^# HELP {name} \S", text, re.MULTILINE)
        labels = 'model="onnx_linear",reason="BACKEND",version="1"' if "failure" in name else \
            'model="onnx_linear",version="1"'
        assert re.search(rf'^{name}{{{labels}}} \d+$', text, re.MULTILINE), name
    triton_lines = [line for line in text.splitlines() if "nv_inference" in line]
    assert len(triton_lines) >= 2 * len(COUNTERS)
    assert not [line for line in triton_lines if "_total" in line or "_created" in line]
    assert "servekit_requests_total" in text  # servekit's own metrics stay beside them
    assert "# TYPE nv_inference_pending_request_count gauge\n" in text
    assert "_summary" not in text  # summaries only with --triton-metrics-config summary_latencies=true
    assert "nv_cache_" not in text  # no model of this page turns the response cache on


def test_the_page_stays_prometheus_text_whatever_the_scraper_asks(triton_page: tuple[ServerProcess, str]) -> None:
    server = triton_page[0]
    openmetrics = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    response = httpx.get(server.metrics_url, headers={"Accept": openmetrics, "Accept-Encoding": "gzip"}, timeout=10)
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert response.headers["content-encoding"] == "gzip"
    assert "# TYPE nv_inference_count counter" in response.text
    assert "# EOF" not in response.text
    assert _value(_triton_samples(response.text), "nv_inference_request_success", "onnx_linear") == len(HTTP_ROWS) + 1
    assert scrape(server.metrics_url).total("nv_inference_count_total") > 0  # the page parses as Prometheus text


def test_a_server_without_the_flag_has_no_triton_names(main_server: ServerProcess) -> None:
    assert "nv_inference" not in scrape(main_server.metrics_url).text
