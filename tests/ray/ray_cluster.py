"""A one-node Ray cluster bound to 127.0.0.1 (``ray start --head --block``), stopped by its PID's process group."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.conftest import require_module
from tests.e2e.harness import HOST, free_port

__all__ = ["RayCluster", "ray_environment", "require_ray"]

START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0


def require_ray() -> None:
    """The ``ray`` extra (fails under CI, skips locally when missing: tests/conftest.py's policy)."""
    require_module("ray.serve", "pip install 'servekit[ray]'")


def ray_environment() -> dict[str, str]:
    """No usage reports, no dashboard metrics export, nothing found through proxies, and loopback
    only: on Linux Ray replaces a node address of 127.0.0.1 with the machine's outward one unless
    it runs in its single-machine mode (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0)."""
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_DISABLE_DOCKER_CPU_WARNING="1", no_proxy="*",
               RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    return env


class RayCluster:
    """``ray start --head --block`` in its own session; every process it spawns is stopped with it."""

    def __init__(self, log_path: Path, num_cpus: int = 2) -> None:
        self.port = free_port()
        self.log_path = log_path
        # Ray puts Unix sockets under the temp dir: keep its path short.
        self.temp_dir = tempfile.mkdtemp(prefix="skray", dir="/tmp")
        ray = str(Path(sys.executable).with_name("ray"))
        self.command = [
            ray, "start", "--head", "--block", "--node-ip-address", HOST, "--port", str(self.port),
            "--num-cpus", str(num_cpus), "--include-dashboard", "false", "--disable-usage-stats",
            "--ray-client-server-port", str(free_port()), "--temp-dir", self.temp_dir,
            # Ports Ray would otherwise take at fixed defaults (52365, ...): another cluster on this machine
            # (a parallel test run) must not collide with this one.
            "--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
            "--metrics-export-port", str(free_port()), "--runtime-env-agent-port", str(free_port()),
        ]
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> RayCluster:
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT,
                                             env=ray_environment(), start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"ray start exited with {self._process.returncode}:\n{self.log()}")
            if "Ray runtime started" in self.log():
                return self
            time.sleep(0.2)
        raise TimeoutError(f"ray start not ready within {START_TIMEOUT_S} s:\n{self.log()}")

    def stop(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)  # the session this test started: nothing else
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=STOP_TIMEOUT_S)
        if process is not None:
            # Workers that outlived the head, still in its session.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
