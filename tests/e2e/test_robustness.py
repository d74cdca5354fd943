"""Hostile and unlucky clients over real sockets: malformed input is a 4xx (INVALID_ARGUMENT on
gRPC) naming what is wrong, never a 5xx; requests that do not arrive in time are closed; bodies
that would cost too much to decode are refused before decoding; the drain after SIGTERM is
bounded and stops every port at once."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from .harness import HOST, ServerProcess
from .managed import wait_until
from .repos import _write_config, _write_handler, write_onnx_model

# onnx_linear: input "x" FP32 [-1, 4].
INFER = "/v2/models/onnx_linear/infer"


def _raw(port: int, data: bytes, timeout_s: float = 10.0) -> bytes:
    """Send ``data`` on a fresh connection and read until the server closes it."""
    with socket.create_connection((HOST, port), timeout=timeout_s) as connection:
        connection.sendall(data)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    return received


def _post(port: int, path: str, body: bytes, *headers: str) -> bytes:
    head = [f"POST {path} HTTP/1.1", f"Host: {HOST}", "Connection: close", f"Content-Length: {len(body)}", *headers]
    return _raw(port, ("\r\n".join(head) + "\r\n\r\n").encode() + body)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("robust")
    write_onnx_model(folder / "models")
    process = ServerProcess(folder / "models", folder / "server.log", "--read-timeout", "1",
                            "--max-json-elements", "1000").start()
    try:
        yield process
    finally:
        process.stop()


def _tensor(**fields: object) -> bytes:
    tensor = {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [0, 0, 0, 0]}
    tensor.update(fields)
    return json.dumps({"inputs": [tensor]}).encode()


@pytest.mark.parametrize(("body", "headers", "message"), [
    pytest.param(_tensor(datatype=[]), (), "unknown datatype []", id="datatype-not-a-string"),
    pytest.param(_tensor(shape=[1] * 65, data=[0]), (), "65 dimensions; at most 64", id="65-dimensions"),
    pytest.param(_tensor(shape=[4611686018427387904, 0], data=[]), (), "is too large", id="huge-shape-json"),
    pytest.param(_tensor(datatype="BYTES", shape=[4611686018427387904, 0], data=[]), (), "is too large",
                 id="huge-shape-bytes"),
    pytest.param(json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2**62, 0],
                                         "parameters": {"binary_data_size": 0}}]}).encode(),
                 ("Inference-Header-Content-Length: {length}",), "is too large", id="huge-shape-binary"),
    pytest.param(_tensor(), ("Inference-Header-Content-Length: \u00b2",), "must be a non-negative integer",
                 id="unicode-digit-header"),
    pytest.param(_tensor(data=[0] * 2000, shape=[500, 4]), (), "more than 1000 values", id="too-many-json-values"),
])
def test_malformed_infer_requests_are_4xx_naming_the_problem(server: ServerProcess, body: bytes,
                                                             headers: tuple[str, ...], message: str) -> None:
    filled = tuple(header.format(length=len(body)) for header in headers)
    answer = _post(server.port, INFER, body, *(h.encode("utf-8").decode("latin-1") for h in filled))
    status = int(answer.split(b" ", 2)[1])
    assert status in (400, 413), answer[:300]
    assert message in json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]


def test_grpc_bytes_that_are_no_protobuf_are_invalid_argument(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.grpc_url) as channel:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                                    request_serializer=lambda raw: raw, response_deserializer=lambda raw: raw)
        with pytest.raises(grpc.RpcError) as refused:
            infer(b"\xff" * 4, timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details() == "the request is not a valid inference.ModelInferRequest message"


def test_a_request_line_without_an_http_version_is_400(server: ServerProcess) -> None:
    answer = _raw(server.port, f"GET /v2/health/ready\r\nHost: {HOST}\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]


def test_a_request_that_does_not_arrive_in_time_gets_408_and_is_closed(server: ServerProcess) -> None:
    # Headers that never end: the connection is answered 408 and closed at --read-timeout (1 s).
    answer = _raw(server.port, f"POST {INFER} HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 10\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout"), answer[:200]
    # A body that never ends, the same.
    answer = _raw(server.port, f"POST {INFER} HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 100\r\n\r\n{{".encode())
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout"), answer[:200]
    with httpx.Client(base_url=server.base_url, timeout=10) as client:  # the server serves on
        assert client.get("/v2/health/ready").status_code == 200


def test_messages_never_name_the_servers_folders(server: ServerProcess) -> None:
    folder = str(server.repository.parent)
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        for answer in (client.get("/v2/models/nope"), client.get("/v2/models/onnx_linear/versions/9"),
                       client.post("/v2/repository/index")):
            assert folder not in answer.text


def _write_slow_model(root: Path, marker: Path) -> None:
    """``slow``: sleeps as many seconds as its input says, after touching ``marker`` (it is running)."""
    model_dir = root / "slow"
    _write_config(model_dir, {"max_batch_size": 1, "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 1]}],
                              "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 1]}],
                              "parameters": {"marker": str(marker)}})
    _write_handler(model_dir, """
        import pathlib
        import time

        from servekit import BaseHandler


        class Slow(BaseHandler):
            def initialize(self, context):
                self.marker = pathlib.Path(context.parameters["marker"])

            def inference(self, data):
                self.marker.touch()
                time.sleep(float(data["x"][0, 0]))
                return {"y": data["x"]}
    """)


def test_the_drain_is_bounded_and_stops_every_port_at_once(tmp_path: Path) -> None:
    marker = tmp_path / "running"
    _write_slow_model(tmp_path / "models", marker)
    server = ServerProcess(tmp_path / "models", tmp_path / "server.log", "--drain-timeout", "3",
                           "--default-model", "slow").start()
    try:
        # A client that never finishes its body, and a request the model takes 1.5 s to answer.
        stalled = socket.create_connection((HOST, server.port), timeout=30)
        stalled.sendall(f"POST {INFER} HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 1000\r\n\r\n{{".encode())
        slow: dict[str, httpx.Response] = {}
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [1.5]}]}
        running = threading.Thread(target=lambda: slow.update(answer=httpx.post(
            f"{server.base_url}/v2/models/slow/infer", json=body, timeout=30)))
        running.start()
        wait_until(marker.exists, what="the slow request to start running")
        server.terminate()
        # gRPC stops accepting at once, like HTTP: a new call is refused while the slow request still runs.
        with grpc.insecure_channel(server.grpc_url) as channel:
            live = channel.unary_unary("/inference.GRPCInferenceService/ServerLive",
                                       request_serializer=lambda raw: raw, response_deserializer=lambda raw: raw)
            with pytest.raises(grpc.RpcError) as refused:
                live(b"", timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert running.is_alive()  # the in-flight request goes on ...
        running.join(30)
        assert slow["answer"].status_code == 200  # ... and is answered
        assert server.wait(30) == 0  # the stalled client does not hold the server past the drain timeout
        stalled.close()
    finally:
        server.stop()


def test_connections_past_the_cap_get_503(tmp_path: Path) -> None:
    write_onnx_model(tmp_path / "models")
    server = ServerProcess(tmp_path / "models", tmp_path / "server.log", "--max-connections", "2").start()
    try:
        held = [socket.create_connection((HOST, server.port), timeout=10) for _ in range(2)]
        for connection in held:  # two open keep-alive connections fill the cap
            connection.sendall(f"GET /v2/health/live HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
            assert connection.recv(65536).startswith(b"HTTP/1.1 200 ")
        answer = _raw(server.port, f"GET /v2/health/live HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n"
                      .encode())
        assert answer.startswith(b"HTTP/1.1 503 "), answer[:200]
        for connection in held:
            connection.close()
        with httpx.Client(base_url=server.base_url, timeout=10) as client:
            wait_until(lambda: client.get("/v2/health/live").status_code == 200, what="a free connection slot")
    finally:
        server.stop()


def test_a_request_on_an_idle_connection_as_the_drain_begins_is_answered(tmp_path: Path) -> None:
    # A long idle grace, so the test never races it: the request below is sent once the drain began.
    write_onnx_model(tmp_path / "models")
    server = ServerProcess(tmp_path / "models", tmp_path / "server.log", "--drain-idle-grace", "30").start()
    try:
        keep_alive = socket.create_connection((HOST, server.port), timeout=30)
        ask = f"GET /v2/health/live HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
        keep_alive.sendall(ask)
        assert keep_alive.recv(65536).startswith(b"HTTP/1.1 200 ")  # served, now idle
        server.terminate()
        wait_until(lambda: "Shutting down" in server.log(), what="the drain to begin")
        keep_alive.sendall(ask)  # the client did not know yet
        answer = b""
        while chunk := keep_alive.recv(65536):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 ") and b"connection: close" in answer.lower()
        keep_alive.close()
        assert server.wait(30) == 0
    finally:
        server.stop()
