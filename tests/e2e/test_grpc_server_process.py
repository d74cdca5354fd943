"""gRPC in the server process: graceful SIGTERM drain, several workers, a taken port."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest

from servekit.grpc.generated import inference_pb2, inference_pb2_grpc

from .harness import HOST, ServerProcess, free_port, servekit_command
from .repos import write_slow_model, write_whoami_model


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


def test_sigterm_lets_in_flight_grpc_calls_finish_then_exits_0(tmp_path: Path) -> None:
    marker = tmp_path / "batches.txt"
    write_slow_model(tmp_path / "models", delay_s=0.5, marker=marker)
    server = ServerProcess(tmp_path / "models", tmp_path / "server.log").start()
    try:
        with ThreadPoolExecutor(4) as pool:
            calls = [pool.submit(_infer, server.grpc_url, "slow", 500 + n) for n in range(4)]
            deadline = time.monotonic() + 10
            while not (marker.exists() and marker.read_text()):  # the first batch is in the model
                assert time.monotonic() < deadline, server.log()
                time.sleep(0.01)
            time.sleep(0.1)  # the other calls are queued behind it
            server.terminate()
            values = [_first_value(call.result(timeout=30), "<i4") for call in calls]
        assert values == [500, 501, 502, 503]
        assert server.wait(15) == 0, server.log()
    finally:
        server.stop()
    assert sum(int(size) for size in marker.read_text().split()) == 4


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="SO_REUSEPORT spreading is Linux behaviour")
def test_every_worker_serves_grpc_on_the_shared_port(tmp_path: Path) -> None:
    write_whoami_model(tmp_path / "models")
    server = ServerProcess(tmp_path / "models", tmp_path / "server.log", "--workers", "2").start()
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
