"""A real redis-server (the Debian package) on a free loopback port, started and stopped by PID."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from tests.conftest import require_executable

__all__ = ["RedisProcess", "redis_or_skip"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def redis_or_skip() -> str:
    """The redis-server executable (fails under CI, skips locally when missing: tests/conftest.py's policy)."""
    return require_executable("redis-server", "apt-get install -y redis-server")


class RedisProcess:
    """``redis-server`` with no persistence, in its own folder; ``url`` is redis://127.0.0.1:PORT/0."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisProcess:
        executable = redis_or_skip()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [executable, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "redis-server exited at start"
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError("redis-server did not answer within 10 s")

    def stop(self) -> None:
        """SIGTERM (SIGKILL after 5 s) by PID; a second call does nothing."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
