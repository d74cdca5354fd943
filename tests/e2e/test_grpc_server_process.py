"""gRPC in the server process: graceful SIGTERM drain, several workers, a taken port."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest

from servekit.grpc.generated import inference_pb2, inference_pb2_grpc
from tests.gate import Gate, wait_for

from .harness import HOST, ServerProcess, free_port, servekit_command
from .repos import write_gated_model, write_whoami_model
from .scrape import gauge


def _infer(url: str, model: str, value: int, *, own_connection: bool = False) -> inference_pb2.ModelInferResponse:
    # Channels to one target share a connection unless told otherwise; workers split connections.
    options = [("grpc.use_local_subchannel_pool", 1)] if own_connection else []
    with grpc.insecure_channel(url, options=options) as channel:
        request = inference_pb2.ModelInferRequest(model_name=model)
        request.inputs.add(name="x", datatype="INT32", shape=[1, 1])
        request.raw_input_contents.append(np.array([[value]], dtype="<i4").tobytes())
        response: inference_pb2.ModelInferResponse = inference_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
            request, timeout=30)
        return response


def _first_value(response: inference_pb2.ModelInferResponse, dtype: str) -> int:
    return int(np.frombuffer(response.raw_output_contents[0], dtype=dtype)[0])


def _request(model: str, value: int) -> inference_pb2.ModelInferRequest:
    request = inference_pb2.ModelInferRequest(model_name=model, id=str(value))
    request.inputs.add(name="x", datatype="INT32", shape=[1, 1])
    request.raw_input_contents.append(np.array([[value]], dtype="<i4").tobytes())
    return request


def _grpc_refused(url: str) -> bool:
    """Whether a new connection's call fails as UNAVAILABLE (the server no longer listens for gRPC)."""
    with grpc.insecure_channel(url, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
        try:
            inference_pb2_grpc.GRPCInferenceServiceStub(channel).ServerLive(inference_pb2.ServerLiveRequest(),
                                                                            timeout=5)
        except grpc.RpcError as error:
            return error.code() == grpc.StatusCode.UNAVAILABLE
        return False


@pytest.fixture()
def gated_server(tmp_path: Path, grpc_frontend: str) -> Iterator[tuple[ServerProcess, Gate]]:
    """A gated model's server, once per gRPC front end (``grpc_frontend``, tests/e2e/conftest.py)."""
    gate = Gate(tmp_path / "gate")
    write_gated_model(tmp_path / "models", gate.folder)
    server = ServerProcess(tmp_path / "models", tmp_path / "server.log", "--grpc-frontend", grpc_frontend).start()
    try:
        yield server, gate
    finally:
        gate.open()
        server.stop()


def test_sigterm_lets_in_flight_grpc_calls_finish_then_exits_0(gated_server: tuple[ServerProcess, Gate]) -> None:
    server, gate = gated_server
    with ThreadPoolExecutor(4) as pool:
        calls = [pool.submit(_infer, server.grpc_url, "gated", 500 + n) for n in range(4)]
        gate.wait_batches(1)  # the first call is in the model
        wait_for(lambda: gauge(server.metrics_url, "servekit_inflight_requests", "gated") == 4, "every call accepted")
        server.terminate()
        wait_for(lambda: _grpc_refused(server.grpc_url), "gRPC to stop accepting")  # the calls are still held
        gate.open()
        values = [_first_value(call.result(timeout=30), "<i4") for call in calls]
    assert values == [500, 501, 502, 503]
    assert server.wait(30) == 0, server.log()
    assert sorted(value for batch in gate.batches() for value in batch) == [500, 501, 502, 503]


def test_sigterm_lets_an_open_stream_finish_its_requests_then_exits_0(
        gated_server: tuple[ServerProcess, Gate]) -> None:
    """ModelStreamInfer with three requests in flight and the client's side still open at SIGTERM: every
    answer comes, the stream ends cleanly when the client closes it, and the server exits 0."""
    server, gate = gated_server
    client_done = threading.Event()

    def requests() -> Iterator[inference_pb2.ModelInferRequest]:
        for value in (700, 701, 702):
            yield _request("gated", value)
        client_done.wait(60)  # the client keeps its side open through the drain

    with grpc.insecure_channel(server.grpc_url) as channel:
        stream = inference_pb2_grpc.GRPCInferenceServiceStub(channel).ModelStreamInfer(requests(), timeout=60)
        gate.wait_batches(1)
        wait_for(lambda: gauge(server.metrics_url, "servekit_inflight_requests", "gated") == 3, "three in flight")
        server.terminate()
        wait_for(lambda: _grpc_refused(server.grpc_url), "gRPC to stop accepting")
        gate.open()
        answers = []
        for response in stream:
            assert response.error_message == ""
            answers.append(int(np.frombuffer(response.infer_response.raw_output_contents[0], dtype="<i4")[0]))
            if len(answers) == 3:
                client_done.set()  # half-close: the stream may now end
        assert stream.code() == grpc.StatusCode.OK
    assert sorted(answers) == [700, 701, 702]
    assert server.wait(30) == 0, server.log()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="SO_REUSEPORT spreading is Linux behaviour")
def test_every_worker_serves_grpc_on_the_shared_port(tmp_path: Path, grpc_frontend: str) -> None:
    write_whoami_model(tmp_path / "models")
    server = ServerProcess(tmp_path / "models", tmp_path / "server.log", "--workers", "2",
                           "--grpc-frontend", grpc_frontend).start()
    try:
        answered: set[int] = set()
        deadline = time.monotonic() + 20
        with ThreadPoolExecutor(8) as pool:
            while len(answered) < 2 and time.monotonic() < deadline:
                responses = pool.map(lambda n: _infer(server.grpc_url, "whoami", n, own_connection=True), range(16))
                answered |= {_first_value(response, "<i8") for response in responses}
        assert len(answered) == 2, f"only {answered} answered over gRPC"
        assert server.pid not in answered  # workers, not the supervising process
    finally:
        code = server.stop()
    assert code == 0, server.log()


def test_a_taken_grpc_port_is_a_clear_error(tmp_path: Path) -> None:
    write_whoami_model(tmp_path / "models")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {key: value for key, value in os.environ.items() if not key.startswith("SERVEKIT_")}
        result = subprocess.run(
            servekit_command("serve", str(tmp_path / "models"), "--host", HOST, "--http-port", str(free_port()),
                             "--grpc-port", str(port), "--workers", "2"),
            capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL,
        )
    assert result.returncode != 0
    assert f"cannot serve gRPC on {HOST}:{port}" in result.stderr, result.stderr
