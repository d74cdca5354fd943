"""What every HTTP benchmark here needs: tools, the machine, a server subprocess, and wrk.

Imported by the benchmark scripts next to it (``python benchmarks/X.py`` puts this
folder on ``sys.path``). Nothing here knows about a particular model.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Server",
    "ensure_py_spy",
    "ensure_wrk",
    "free_port",
    "grpc_frame",
    "http",
    "library_versions",
    "load_average",
    "machine_description",
    "run_wrk",
    "serving",
    "wrk_script",
    "wrk_version",
]

READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 15.0

# The per-request Lua response() hook is left out on purpose: it makes wrk hand every
# response to Lua, which costs CPU that the server (on the same cores) would miss.
# summary.errors.status is wrk's own count of responses with status > 399. The body
# sits in a level-2 long string because JSON rows end in "]]", which would close [[ ]].
_LUA_TEMPLATE = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "{content_type}"
wrk.body = [==[{body}]==]

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "SERVEKIT_RESULT requests=%d duration_us=%d p50_us=%d p90_us=%d p99_us=%d mean_us=%.1f max_us=%d "
    .. "status_errors=%d connect_errors=%d read_errors=%d write_errors=%d timeout_errors=%d\\n",
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max,
    e.status, e.connect, e.read, e.write, e.timeout))
end
"""


# -- tools -----------------------------------------------------------------------------


def ensure_wrk(install: bool) -> str:
    """The path of wrk; installs the Debian package only when ``install`` is set, else exits."""
    found = shutil.which("wrk")
    if found:
        return found
    command = ["apt-get", "install", "-y", "wrk"]
    if not install:
        sys.exit(
            "wrk is not on PATH. Install it with:\n"
            f"    apt-get update && {shlex.join(command)}\n"
            "or rerun with --install-tools to let this script run that command."
        )
    print(f"installing wrk: apt-get update && {shlex.join(command)}", flush=True)
    subprocess.run(["apt-get", "update"], check=True)
    subprocess.run(command, check=True)
    found = shutil.which("wrk")
    if not found:
        sys.exit("apt-get install wrk finished but wrk is still not on PATH")
    return found


def ensure_py_spy(install: bool) -> str:
    """The path of py-spy (PATH, or next to this Python); pip-installs it only when ``install`` is set."""
    beside = Path(sys.executable).parent / "py-spy"
    found = shutil.which("py-spy") or (str(beside) if beside.is_file() else None)
    if found:
        return found
    command = [sys.executable, "-m", "pip", "install", "py-spy"]
    if not install:
        sys.exit(f"py-spy is not installed. Install it with:\n    {shlex.join(command)}\n"
                 "or rerun with --install-tools to let this script run that command.")
    subprocess.run(command, check=True)
    if not beside.is_file() and not shutil.which("py-spy"):
        sys.exit("pip install py-spy finished but py-spy is still not found")
    return shutil.which("py-spy") or str(beside)


def wrk_version(wrk: str) -> str:
    # wrk has no version flag; it prints its version line before the usage text.
    completed = subprocess.run([wrk, "--version"], capture_output=True, text=True, timeout=10)
    lines = (completed.stdout + completed.stderr).strip().splitlines()
    return lines[0].split(" Copyright")[0] if lines else "unknown"


# -- the machine -----------------------------------------------------------------------


def machine_description() -> str:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"nproc={os.cpu_count()}, CPU: {cpu}, {platform.system()} {platform.release()}"


def load_average() -> str:
    """The 1/5/15-minute load averages: other work on the machine skews every number."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def library_versions(names: tuple[str, ...]) -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = [f"Python {platform.python_version()}"]
    for name in names:
        try:
            parts.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            parts.append(f"{name} (not installed)")
    return ", ".join(parts)


# -- the server ------------------------------------------------------------------------


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path
    exit_code: int | None = None  # set once stopped; None after a SIGKILL

    def log_problems(self) -> list[str]:
        """ERROR and Traceback lines of the server's log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if "ERROR" in line or "Traceback" in line]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def grpc_frame(message: bytes) -> bytes:
    """A serialized protobuf message as one gRPC length-prefixed frame (uncompressed)."""
    return struct.pack(">BI", 0, len(message)) + message  # compressed flag, big-endian length


@dataclass(frozen=True)
class H2Load:
    """One h2load run: each call's latency (ms) and HTTP status, and what it printed (with the command)."""

    latencies_ms: list[float]
    statuses: list[str]
    output: str

    @property
    def errors(self) -> int:
        return sum(status != "200" for status in self.statuses)


def run_h2load(port: int, path: str, body: bytes, connections: int, duration: float, scratch: Path,
               threads: int = 1) -> H2Load:
    """h2load sending gRPC ``body`` (framed) to ``path``: ``connections`` HTTP/2 connections with one
    call at a time each (a closed loop, as wrk's), for ``duration`` seconds. RuntimeError if it failed."""
    body_file, log = scratch / "h2load-body.bin", scratch / "h2load.log"
    body_file.write_bytes(body)
    log.unlink(missing_ok=True)
    command = ["h2load", "-t", str(threads), "-c", str(connections), "-m", "1", "-D", str(max(1, round(duration))),
               "-d", str(body_file), f"--log-file={log}", "-H", "content-type: application/grpc",
               "-H", "te: trailers", f"http://127.0.0.1:{port}{path}"]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60)
    output = f"$ {shlex.join(command)}\n{completed.stdout}{completed.stderr}"
    rows = [line.split("\t") for line in log.read_text().splitlines() if line.strip()] if log.exists() else []
    if completed.returncode != 0 or not rows:
        raise RuntimeError(f"h2load failed ({completed.returncode}):\n{output}")
    # h2load's log: start time, status, latency in microseconds
    return H2Load([int(row[2]) / 1000 for row in rows], [row[1] for row in rows], output)


def http(method: str, url: str, body: str | None = None, timeout: float = 5.0,
         content_type: str = "application/json") -> tuple[int, bytes]:
    """(status, body) of one request; HTTP error statuses are returned, not raised."""
    data = body.encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read()


@contextlib.contextmanager
def serving(repository: Path, log_path: Path, source: Path | None = None,
            extra_args: tuple[str, ...] = ()) -> Iterator[Server]:
    """``python -m servekit serve REPOSITORY``, HTTP only, on 127.0.0.1 and a free port, ready;
    always stopped after. ``source``: a ``src`` folder whose servekit to run instead of the
    installed one (put first on PYTHONPATH), e.g. a copy of the code before a change."""
    port = free_port()
    # --grpc-port 0: no gRPC, so nothing else shares the event loop and no fixed port can clash.
    command = [
        sys.executable, "-m", "servekit", "serve", str(repository),
        "--host", "127.0.0.1", "--http-port", str(port), "--grpc-port", "0",
        "--metrics-port", "0", "--management-port", "0", "--log-level", "warning", *extra_args,
    ]
    env = dict(os.environ)
    if source is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(source.resolve()), *filter(None, [env.get("PYTHONPATH")])])
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    server = Server(process, f"http://127.0.0.1:{port}", log_path)
    try:
        _wait_ready(server)
        yield server
    finally:
        server.exit_code = _stop(process)


def _log_tail(log_path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _wait_ready(server: Server) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited with {server.process.returncode}:\n{_log_tail(server.log_path)}")
        with contextlib.suppress(OSError):
            status, _ = http("GET", f"{server.base_url}/v2/health/ready", timeout=1.0)
            if status == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"server not ready after {READY_TIMEOUT_S:.0f} s:\n{_log_tail(server.log_path)}")


def _stop(process: subprocess.Popen[bytes]) -> int | None:
    """SIGTERM by PID, then SIGKILL if it has not exited within STOP_TIMEOUT_S; the exit code."""
    if process.poll() is not None:
        return process.returncode
    os.kill(process.pid, signal.SIGTERM)
    try:
        return process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        print(f"server {process.pid} ignored SIGTERM for {STOP_TIMEOUT_S:.0f} s; killing it", flush=True)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=STOP_TIMEOUT_S)
        return None


# -- wrk -------------------------------------------------------------------------------


def wrk_script(body: str, content_type: str = "application/json") -> str:
    """A wrk Lua script that POSTs ``body`` and prints one SERVEKIT_RESULT line when done."""
    if "]==]" in body:
        raise ValueError("the body holds ']==]', which would end the Lua long string early")
    return _LUA_TEMPLATE.format(body=body, content_type=content_type)


def run_wrk(
    wrk: str, url: str, script: Path, connections: int, threads: int, duration: float
) -> tuple[dict[str, float], str]:
    """Run wrk once; (the SERVEKIT_RESULT values, wrk's whole output). Raises when wrk fails."""
    command = [
        wrk, f"-t{min(threads, connections)}", f"-c{connections}", f"-d{max(1, round(duration))}s",
        "--timeout", "10s", "--latency", "-s", str(script), url,
    ]
    # Hard limit: the run itself, wrk's 10 s request timeout, and slack to start and report.
    completed = subprocess.run(command, capture_output=True, text=True, timeout=duration + 30)
    output = completed.stdout + completed.stderr
    if completed.returncode != 0:
        raise RuntimeError(f"{shlex.join(command)} exited {completed.returncode}:\n{output}")
    for line in output.splitlines():
        if line.startswith("SERVEKIT_RESULT "):
            values = dict(field.split("=", 1) for field in line.split()[1:])
            return {key: float(value) for key, value in values.items()}, output
    raise RuntimeError(f"wrk printed no SERVEKIT_RESULT line (a Lua error?):\n{output}")
