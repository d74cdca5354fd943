"""Metrics on their own port and the access log, from real server processes: one worker and two."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from servekit.config import parse_model_config
from servekit.grpc.generated import model_service_pb2 as pb
from servekit.grpc.generated import model_service_pb2_grpc
from servekit.observability.metrics import REQUEST_OUTCOMES, SERVED_PROTOCOLS

from .harness import HOST, ServerProcess, answers_from_two_workers
from .repos import FAULTY_MAGIC, write_faulty_model, write_onnx_model, write_whoami_model
from .scrape import Samples, scrape

ROW = [1.0, 2.0, 3.0, 4.0]


def _infer(values: list[float], request_id: str | None = None) -> dict[str, object]:
    """An OIP JSON body of one row ``values`` for input x."""
    body: dict[str, object] = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, len(values)],
                                           "data": values}]}
    if request_id is not None:
        body["id"] = request_id
    return body


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Samples]]:
    """A one-worker server after a known mix of requests over every protocol, and its metrics then."""
    repository = tmp_path_factory.mktemp("metrics") / "models"
    write_onnx_model(repository)
    write_faulty_model(repository)
    server = ServerProcess(repository, tmp_path_factory.mktemp("logs") / "metrics.log",
                           "--default-model", "onnx_linear")
    server.start()
    try:
        with httpx.Client(base_url=server.base_url, timeout=10) as client:
            v1 = "/v2/models/onnx_linear/versions/1/infer"
            for _ in range(2):
                assert client.post(v1, json=_infer(ROW)).status_code == 200
            assert client.post("/predict", json={"inputs": [ROW]}).status_code == 200
            assert client.post(v1, json=_infer(ROW[:3])).status_code == 400
            assert client.post("/v2/models/faulty/infer", json=_infer([FAULTY_MAGIC])).status_code == 500
            assert client.post("/v2/models/no_such_model/infer", json=_infer(ROW)).status_code == 404
        triton = grpcclient.InferenceServerClient(server.grpc_url)
        pixels = grpcclient.InferInput("x", [1, 4], "FP32")
        pixels.set_data_from_numpy(np.array([ROW], dtype=np.float32))
        triton.infer("onnx_linear", [pixels], model_version="1", request_id="grpc-1")
        triton.close()
        with grpc.insecure_channel(server.grpc_url) as channel:
            model_service_pb2_grpc.ModelServiceStub(channel).Predict(pb.PredictRequest(features=ROW), timeout=10)
        yield server, scrape(server.metrics_url)
    finally:
        server.stop()


def test_requests_are_counted_by_model_version_protocol_and_outcome(observed: tuple[ServerProcess, Samples]) -> None:
    _, samples = observed
    every = {(have["model"], have["version"], have["protocol"], have["outcome"]): value
             for have, value in samples.select("servekit_requests_total")}
    counted = {labels: value for labels, value in every.items() if value}
    assert counted == {
        ("onnx_linear", "1", "http", "success"): 2,
        ("onnx_linear", "2", "simple_http", "success"): 1,  # /predict: the default version
        ("onnx_linear", "1", "http", "invalid_input"): 1,
        ("faulty", "1", "http", "model_failed"): 1,
        ("", "", "http", "model_not_found"): 1,
        ("onnx_linear", "1", "grpc", "success"): 1,
        ("onnx_linear", "2", "simple_grpc", "success"): 1,
    }
    # Every loaded version has each protocol's series of each outcome from its load on, at 0 until counted.
    for model, version in (("onnx_linear", "1"), ("onnx_linear", "2"), ("faulty", "1")):
        for protocol in SERVED_PROTOCOLS:
            for outcome in REQUEST_OUTCOMES:
                assert (model, version, protocol, outcome) in every, (model, version, protocol, outcome)


def test_durations_batches_and_gauges_are_in_base_units(observed: tuple[ServerProcess, Samples]) -> None:
    _, samples = observed
    v1 = {"model": "onnx_linear", "version": "1"}
    assert samples.total("servekit_request_duration_seconds_count", **v1) == 4
    assert 0 < samples.total("servekit_request_duration_seconds_sum", **v1) < 5
    assert samples.total("servekit_batch_size_sum", **v1) == 3  # three rows ran (the bad one never did)
    assert samples.total("servekit_queue_duration_seconds_count", **v1) == 3
    assert samples.total("servekit_compute_duration_seconds_count", **v1) == samples.total(
        "servekit_batch_size_count", **v1)
    buckets = samples.select("servekit_request_duration_seconds_bucket", **v1, protocol="http")
    assert {have["le"] for have, _ in buckets} >= {"0.001", "0.1", "1.0", "+Inf"}
    for version in ("1", "2"):
        assert samples.total("servekit_model_ready", model="onnx_linear", version=version) == 1
        assert samples.total("servekit_model_instances", model="onnx_linear", version=version) == 1
        assert samples.total("servekit_model_load_duration_seconds", model="onnx_linear", version=version) > 0
    assert samples.total("servekit_queue_depth", **v1) == 0
    assert samples.total("servekit_inflight_requests", **v1) == 0


def test_process_metrics_are_the_servers(observed: tuple[ServerProcess, Samples]) -> None:
    server, samples = observed
    assert str(server.pid) in samples.label_values("process_resident_memory_bytes", "pid")
    assert samples.total("process_cpu_seconds_total", pid=str(server.pid)) > 0
    assert samples.total("process_open_fds", pid=str(server.pid)) > 0


def test_one_access_log_line_per_request(observed: tuple[ServerProcess, Samples]) -> None:
    server, _ = observed
    deadline = time.monotonic() + 10  # access lines are written in batches, at most 0.1 s late
    while True:
        lines = [line for line in server.log().splitlines() if " servekit.access: " in line]
        if len(lines) >= 8 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(lines) == 8, "\n".join(lines)
    assert any("id=grpc-1 model=onnx_linear version=1 protocol=grpc status=200 duration_ms=" in line
               for line in lines)
    assert any("model=faulty version=1 protocol=http status=500" in line for line in lines)
    # no id given: the server made one (and sent it back as x-request-id)
    assert any(re.search(r"id=[0-9a-f]{12}-\d+ model=no_such_model version=- protocol=http status=404", line)
               for line in lines)


def _refused(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex((HOST, port)) != 0


def test_metrics_port_0_serves_no_metrics_and_json_access_logs(tmp_path: Path) -> None:
    write_onnx_model(tmp_path / "models")
    server = ServerProcess(tmp_path / "models", tmp_path / "server.log", "--metrics-port", "0",
                           "--access-log", "json")
    server.start()
    try:
        response = httpx.post(f"{server.base_url}/v2/models/onnx_linear/infer", timeout=10,
                              json=_infer(ROW, request_id="json-1"))
        assert response.status_code == 200
        assert _refused(server.metrics_port)
    finally:
        server.stop()
    # --access-log json makes the whole log JSON: every line is one object
    records = [json.loads(line) for line in server.log().splitlines() if line.strip()]
    access = [record for record in records if record["logger"] == "servekit.access"]
    assert len(access) == 1
    [record] = access
    assert {key: record[key] for key in ("request_id", "model", "version", "protocol", "status", "cache")} == {
        "request_id": "json-1", "model": "onnx_linear", "version": "2", "protocol": "http", "status": 200,
        "cache": "-"}
    assert record["duration_ms"] > 0 and record["pid"] > 0


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc to see worker processes")
def test_two_workers_are_counted_together(tmp_path: Path) -> None:
    write_whoami_model(tmp_path / "models")
    server = ServerProcess(tmp_path / "models", tmp_path / "server.log", "--workers", "2", "--access-log", "off")
    server.start()
    try:
        answered = answers_from_two_workers(server)
        workers = set(answered)

        samples = scrape(server.metrics_url)
        whoami_v1 = {"model": "whoami", "version": "1"}
        assert samples.total("servekit_requests_total", **whoami_v1, protocol="http",
                             outcome="success") == len(answered)
        assert samples.total("servekit_batch_size_sum", **whoami_v1) == len(answered)
        assert samples.total("servekit_model_ready", **whoami_v1) == 2  # ready in both workers
        assert samples.total("servekit_model_instances", **whoami_v1) == 2
        assert {str(pid) for pid in workers} | {str(server.pid)} <= samples.label_values(
            "process_resident_memory_bytes", "pid")
    finally:
        assert server.stop() == 0, server.log()


def test_readme_metrics_command_and_cache_snippet(observed: tuple[ServerProcess, Samples]) -> None:
    server, _ = observed
    docs = Path(__file__).resolve().parents[2] / "docs"
    metrics_page = (docs / "metrics.md").read_text(encoding="utf-8")
    cache_page = (docs / "caching.md").read_text(encoding="utf-8")
    [command] = [block for block in re.findall(r"```bash\n(.*?)```", metrics_page, flags=re.DOTALL)
                 if "localhost:8002/metrics" in block]
    done = subprocess.run(["bash", "-c", command.replace("localhost:8002", f"{HOST}:{server.metrics_port}")],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith('servekit_requests_total{model="onnx_linear"') for line in lines), lines
    assert any(line.startswith("servekit_model_ready{") for line in lines), lines
    [snippet] = [block for block in re.findall(r"```yaml\n(.*?)```", cache_page, flags=re.DOTALL)
                 if block.startswith("cache:")]
    assert parse_model_config(snippet, "docs/caching.md").cache.enabled


def test_a_taken_metrics_port_is_a_clear_error(tmp_path: Path) -> None:
    write_onnx_model(tmp_path / "models")
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = ServerProcess(tmp_path / "models", tmp_path / "server.log", "--metrics-port", str(port))
        with pytest.raises(RuntimeError, match=f"cannot serve metrics on {HOST}:{port}"):
            server.start()
    assert "Traceback" not in server.log()
