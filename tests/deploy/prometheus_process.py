"""A real Prometheus (the Debian package) on a free loopback port, started and stopped by PID."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import require_executable
from tests.e2e.harness import HOST, free_port

__all__ = ["PrometheusProcess", "executable_or_skip"]


def executable_or_skip(name: str) -> str:
    """``prometheus`` or ``promtool`` (fails under CI, skips locally when missing: tests/conftest.py's policy)."""
    return require_executable(name, "apt-get install -y prometheus")


class PrometheusProcess:
    """``prometheus`` with ``config`` and its own storage folder; ``url`` is its HTTP API."""

    def __init__(self, config: Path, folder: Path) -> None:
        self.config = config
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self, timeout_s: float = 30.0) -> PrometheusProcess:
        executable = executable_or_skip("prometheus")
        self.folder.mkdir(parents=True, exist_ok=True)
        with (self.folder / "prometheus.log").open("wb") as log:
            self.process = subprocess.Popen(
                [executable, f"--config.file={self.config}", f"--storage.tsdb.path={self.folder / 'data'}",
                 f"--web.listen-address={HOST}:{self.port}", "--storage.tsdb.retention.time=1h"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited at start:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"prometheus not ready within {timeout_s} s:\n{self.log()}")

    def log(self) -> str:
        path = self.folder / "prometheus.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def query(self, expr: str) -> dict[str, Any]:
        """The ``data`` of an instant query; fails the test on a PromQL error."""
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body: dict[str, Any] = response.json()
        assert response.status_code == 200 and body["status"] == "success", f"{expr}: {body}"
        data: dict[str, Any] = body["data"]
        return data

    def stop(self) -> None:
        """SIGTERM (SIGKILL after 10 s) by PID; a second call does nothing."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
