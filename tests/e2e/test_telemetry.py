"""Traces, request ids and the one log format, against a real server with two workers: spans exported
by the OpenTelemetry SDK over OTLP/HTTP to a receiver on a real socket; every line the server writes
is one JSON object."""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest

from servekit.grpc.generated import inference_pb2, inference_pb2_grpc

from .harness import ServerProcess
from .otlp_receiver import OtlpReceiver, ReceivedSpan
from .repos import write_onnx_model

SERVER_KIND = 2  # opentelemetry.proto.trace.v1.Span.SpanKind.SPAN_KIND_SERVER


class _TracedServer(ServerProcess):
    def start(self) -> ServerProcess:
        # Standard OpenTelemetry variables, read by the SDK in each worker: send spans every 50 ms.
        saved = {name: os.environ.get(name) for name in ("OTEL_BSP_SCHEDULE_DELAY", "OTEL_SERVICE_NAME")}
        os.environ.update({"OTEL_BSP_SCHEDULE_DELAY": "50", "OTEL_SERVICE_NAME": "servekit-under-test"})
        try:
            return super().start()
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


def _tracing_section() -> str:
    """The documented section "Tracing and logs": in README.md, or a page of docs/ once it moves there."""
    root = Path(__file__).resolve().parents[2]
    for page in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        text = "\n" + page.read_text(encoding="utf-8")
        found = re.search(r"\n(#+) Tracing and logs\n", text)
        if found:
            rest = text[found.end():]
            end = re.search(rf"\n#{{1,{len(found.group(1))}}} ", rest)
            return rest if end is None else rest[:end.start()]
    raise AssertionError("no section 'Tracing and logs' in README.md or docs/")


def readme_serve_flags(endpoint: str) -> list[str]:
    """The flags of the documented command in "Tracing and logs", with ``endpoint`` for its URL."""
    [block] = re.findall(r"```bash\n(.*?)```", _tracing_section(), flags=re.DOTALL)
    words = shlex.split(block)
    assert words[:3] == ["servekit", "serve", "models"], words
    flags = words[3:]
    flags[flags.index("--otel-endpoint") + 1] = endpoint
    return flags


@pytest.fixture(scope="module")
def server(receiver: OtlpReceiver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The README's command (tracing, JSON logs), with two workers."""
    repository = tmp_path_factory.mktemp("telemetry") / "models"
    write_onnx_model(repository)
    flags = readme_serve_flags(receiver.endpoint)
    assert flags[flags.index("--log-format") + 1] == "json"
    process = _TracedServer(repository, tmp_path_factory.mktemp("logs") / "telemetry.log", *flags, "--workers", "2")
    process.start()
    try:
        yield process
    finally:
        process.stop()


def _traceparent() -> tuple[str, str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def _by_name(spans: list[ReceivedSpan]) -> dict[str, ReceivedSpan]:
    return {span.name: span for span in spans}


def _check_children(spans: dict[str, ReceivedSpan], server_span: ReceivedSpan, rows: int) -> None:
    waited, computed = spans["servekit.queue_wait"], spans["servekit.compute"]
    assert waited.parent_span_id == computed.parent_span_id == server_span.span_id
    assert computed.attributes["servekit.batch.size"] >= rows
    assert computed.attributes["servekit.batch.requests"] >= 1
    assert computed.attributes["servekit.model"] == waited.attributes["servekit.model"] == "onnx_linear"


def test_an_http_request_is_traced_under_its_callers_traceparent(server: ServerProcess,
                                                                  receiver: OtlpReceiver) -> None:
    traceparent, trace_id, caller_span = _traceparent()
    body = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [0.0] * 8}]}
    answer = httpx.post(f"{server.base_url}/v2/models/onnx_linear/infer", json=body,
                        headers={"traceparent": traceparent, "x-request-id": "traced-http-1"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-request-id"] == "traced-http-1"

    spans = _by_name(receiver.trace(trace_id, at_least=3))
    server_span = spans["POST /v2/models/{model}/infer"]
    assert (server_span.kind, server_span.parent_span_id, server_span.service) == (
        SERVER_KIND, caller_span, "servekit-under-test")
    assert server_span.attributes["http.response.status_code"] == 200
    assert server_span.attributes["servekit.request_id"] == "traced-http-1"
    _check_children(spans, server_span, rows=2)


def test_a_failed_http_request_is_a_failed_span_with_its_request_id(server: ServerProcess,
                                                                     receiver: OtlpReceiver) -> None:
    traceparent, trace_id, _ = _traceparent()
    answer = httpx.post(f"{server.base_url}/v2/models/no_such_model/infer", json={"inputs": []},
                        headers={"traceparent": traceparent})
    assert answer.status_code == 404
    made = answer.headers["x-request-id"]
    assert answer.json() == {"error": answer.json()["error"], "request_id": made}
    (span,) = receiver.trace(trace_id, at_least=1)
    assert span.attributes["http.response.status_code"] == 404
    assert span.attributes["servekit.request_id"] == made


def test_a_route_fastapi_answers_is_named_by_its_template(server: ServerProcess, receiver: OtlpReceiver) -> None:
    traceparent, trace_id, caller_span = _traceparent()
    answer = httpx.get(f"{server.base_url}/v2/models/onnx_linear", headers={"traceparent": traceparent})
    assert answer.status_code == 200 and answer.headers["x-request-id"]
    (span,) = receiver.trace(trace_id, at_least=1)
    assert (span.name, span.kind, span.parent_span_id) == ("GET /v2/models/{model}", SERVER_KIND, caller_span)
    assert span.attributes["http.route"] == "/v2/models/{model}"
    assert span.attributes["servekit.request_id"] == answer.headers["x-request-id"]


def test_a_grpc_call_is_traced_under_its_callers_traceparent(server: ServerProcess,
                                                              receiver: OtlpReceiver) -> None:
    traceparent, trace_id, caller_span = _traceparent()
    request = inference_pb2.ModelInferRequest(model_name="onnx_linear", id="oip-7")
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[3, 4])
    tensor.contents.fp32_contents.extend([1.0] * 12)
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
        response, call = stub.ModelInfer.with_call(request, metadata=(("traceparent", traceparent),), timeout=30)
    assert response.id == "oip-7"
    assert dict(call.trailing_metadata())["x-request-id"] == "oip-7"  # no x-request-id: the OIP id is the id
    assert np.frombuffer(response.raw_output_contents[0], dtype=np.float32).size == 9

    spans = _by_name(receiver.trace(trace_id, at_least=3))
    server_span = spans["inference.GRPCInferenceService/ModelInfer"]
    assert (server_span.kind, server_span.parent_span_id) == (SERVER_KIND, caller_span)
    assert server_span.attributes["rpc.system"] == "grpc"
    assert server_span.attributes["rpc.grpc.status_code"] == 0
    assert server_span.attributes["servekit.request_id"] == "oip-7"
    _check_children(spans, server_span, rows=3)


def test_a_grpc_error_carries_the_request_id(server: ServerProcess) -> None:
    request = inference_pb2.ModelInferRequest(model_name="no_such_model")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 4]).contents.fp32_contents.extend([0.0] * 4)
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(request, metadata=(("x-request-id", "grpc-err-1"),), timeout=30)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert dict(caught.value.trailing_metadata())["x-request-id"] == "grpc-err-1"


def test_each_request_of_a_stream_is_logged_under_its_own_id(server: ServerProcess) -> None:
    def request(oip_id: str) -> inference_pb2.ModelInferRequest:
        message = inference_pb2.ModelInferRequest(model_name="onnx_linear", id=oip_id)
        message.inputs.add(name="x", datatype="FP32", shape=[1, 4]).contents.fp32_contents.extend([1.0] * 4)
        return message

    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
        call = stub.ModelStreamInfer(iter([request("stream-1"), request("stream-2")]), timeout=30)
        answered = sorted(response.infer_response.id for response in call)
        assert answered == ["stream-1", "stream-2"]
        assert dict(call.trailing_metadata())["x-request-id"]  # the call's own id (made: none was sent)
    records = _log_records(server, "stream-2")
    logged = {r["request_id"] for r in records if r["logger"] == "servekit.access" and r["protocol"] == "grpc"}
    assert {"stream-1", "stream-2"} <= logged


def _log_records(server: ServerProcess, request_id: str) -> list[dict[str, object]]:
    deadline = time.monotonic() + 30
    while True:
        lines = [line for line in server.log().splitlines() if line.strip()]
        records = [json.loads(line) for line in lines]  # every line the server wrote is one JSON object
        if any(record.get("request_id") == request_id for record in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.05)


def test_every_line_is_one_json_object_of_one_shape(server: ServerProcess) -> None:
    answer = httpx.post(f"{server.base_url}/v2/models/onnx_linear/infer", headers={"x-request-id": "logged-1"},
                        json={"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]})
    assert answer.status_code == 200
    records = _log_records(server, "logged-1")
    for record in records:
        assert {"time", "level", "logger", "message", "request_id"} <= set(record), record
    loggers = {str(record["logger"]) for record in records}
    assert "servekit.access" in loggers
    assert any(name.startswith("uvicorn") for name in loggers), loggers  # uvicorn's own records, as JSON
    access = [r for r in records if r["logger"] == "servekit.access" and r["request_id"] == "logged-1"]
    assert len(access) == 1 and access[0]["status"] == 200 and access[0]["model"] == "onnx_linear"


def test_without_an_endpoint_nothing_is_exported(receiver: OtlpReceiver, tmp_path: Path) -> None:
    repository = tmp_path / "models"
    write_onnx_model(repository)
    plain = ServerProcess(repository, tmp_path / "plain.log").start()
    try:
        traceparent, trace_id, _ = _traceparent()
        body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0.0] * 4}]}
        answer = httpx.post(f"{plain.base_url}/v2/models/onnx_linear/infer", json=body,
                            headers={"traceparent": traceparent})
        assert answer.status_code == 200
        assert answer.headers["x-request-id"]  # made by the server
        assert "id" not in answer.json()  # the OIP answer's id is the body's, as Triton answers
    finally:
        plain.stop()  # a traced server would export what is pending now
    assert not [span for span in receiver.spans if span.trace_id == trace_id]
    assert not plain.log().lstrip().startswith("{")  # text lines by default
