"""Start the real server as a subprocess on a free loopback port, and stop it by PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

__all__ = ["HOST", "SIMPLE_MAX_REQUEST_BYTES", "ServerProcess", "answers_from_two_workers", "free_port",
           "servekit_command"]

HOST = "127.0.0.1"
START_TIMEOUT_S = 120.0  # generous: a loaded machine may take long to import and load
STOP_TIMEOUT_S = 15.0
# --max-request-bytes of the simple API server (the smallest the settings allow is 1024).
SIMPLE_MAX_REQUEST_BYTES = 4096


def free_port() -> int:
    """A loopback port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def servekit_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "servekit", *args]


class ServerProcess:
    """``python -m servekit serve REPO`` on its own HTTP, gRPC and metrics ports; output goes to a log
    file for failure reports. An ``extra_args`` ``--metrics-port`` wins over the free one (e.g. 0). The
    management API is off unless ``extra_args`` give a ``--management-port`` (tests/e2e/managed.py does)."""

    def __init__(self, repository: Path, log_path: Path, *extra_args: str) -> None:
        self.repository = repository
        self.log_path = log_path
        self.port = free_port()
        self.grpc_port = free_port()
        self.metrics_port = free_port()
        self.args = servekit_command(
            "serve", str(repository), "--host", HOST, "--http-port", str(self.port),
            "--grpc-port", str(self.grpc_port), "--metrics-port", str(self.metrics_port),
            "--management-port", "0", *extra_args,
        )
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """host:port, as tritonclient wants it (no scheme)."""
        return f"{HOST}:{self.port}"

    @property
    def grpc_url(self) -> str:
        """host:port of the gRPC server (tritonclient.grpc and grpc channels take it as is)."""
        return f"{HOST}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        """The Prometheus endpoint (any path answers; /metrics by convention)."""
        return f"http://{HOST}:{self.metrics_port}/metrics"

    scheme = "http"  # a subclass serving TLS says https, and gives client_options its certificates

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{HOST}:{self.port}"

    def client_options(self) -> dict[str, object]:
        """Keyword arguments for an httpx client of this server (TLS verification and certificates)."""
        return {}

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def start(self) -> ServerProcess:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        # Settings come from flags only: a stray SERVEKIT_* variable must not change the server under test.
        env = {key: value for key, value in env.items() if not key.startswith("SERVEKIT_")}
        with self.log_path.open("wb") as log_file:
            self.process = subprocess.Popen(
                self.args, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                start_new_session=True,  # its own process group, so a hung server and its workers can be killed
            )
        self.wait_ready()
        return self

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Poll /v2/health/ready until 200; fail with the server's log if it exits or never gets there."""
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        with httpx.Client(base_url=self.base_url, timeout=2.0, **self.client_options()) as client:  # type: ignore[arg-type]
            while time.monotonic() < deadline:
                code = self.process.poll()
                if code is not None:
                    raise RuntimeError(f"server exited with code {code} before it was ready:\n{self.log()}")
                try:
                    if client.get("/v2/health/ready").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server not ready within {timeout_s} s:\n{self.log()}")

    def terminate(self) -> None:
        """Send SIGTERM (graceful drain) without waiting."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        assert self.process is not None
        return self.process.wait(timeout_s)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, then SIGKILL if the process is still there after ``timeout_s``; returns the exit code."""
        if self.process is None:
            return None
        self.terminate()
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)  # the group is this server and its workers only
            return self.process.wait(timeout_s)


def answers_from_two_workers(server: ServerProcess, timeout_s: float = 20.0) -> list[int]:
    """Ask ``whoami`` (repos.write_whoami_model) on ``server`` (``--workers 2``), each time on a new
    connection, until both worker processes have answered; the answering process of every request.
    Fails when only one worker answered in ``timeout_s``."""
    body = {"inputs": [{"name": "x", "datatype": "INT32", "shape": [1, 1], "data": [1]}]}

    def whoami(_: int) -> int:
        with httpx.Client(base_url=server.base_url, timeout=30) as client:  # a new connection each time
            response = client.post("/v2/models/whoami/infer", json=body)
            assert response.status_code == 200, response.text
            pid: int = response.json()["outputs"][0]["data"][0]
            return pid

    answered: list[int] = []
    deadline = time.monotonic() + timeout_s
    with ThreadPoolExecutor(8) as pool:
        while len(set(answered)) < 2 and time.monotonic() < deadline:
            answered.extend(pool.map(whoami, range(16)))
    assert len(set(answered)) == 2, "only one worker ever answered"
    return answered
