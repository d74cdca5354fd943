"""The server as a process: command line, graceful SIGTERM drain, several workers."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

import servekit
from tests.conftest import require_executable

from .harness import HOST, ServerProcess, free_port, servekit_command
from .repos import write_slow_model, write_whoami_model

SLOW_DELAY_S = 0.5


def _run(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SERVEKIT_")}
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)


def _connection_refused(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        try:
            sock.connect((HOST, port))
        except ConnectionRefusedError:
            return True
        return False


def _infer_body(name: str, datatype: str, values: list[int]) -> bytes:
    document = {"inputs": [{"name": name, "datatype": datatype, "shape": [len(values), 1], "data": values}]}
    return json.dumps(document).encode()


# -- command line ---------------------------------------------------------------------------------------


def test_python_m_servekit_help() -> None:
    result = _run(*servekit_command("--help"))
    assert result.returncode == 0, result.stderr
    assert "serve" in result.stdout and "demo" in result.stdout


def test_version() -> None:
    result = _run(*servekit_command("--version"))
    assert result.returncode == 0, result.stderr
    assert servekit.__version__ in result.stdout


def test_serve_help_lists_its_flags() -> None:
    result = _run(*servekit_command("serve", "--help"))
    assert result.returncode == 0, result.stderr
    for flag in ("--host", "--http-port", "--workers", "--default-model", "--max-request-bytes", "--log-level"):
        assert flag in result.stdout


def test_console_script_serve_help() -> None:
    script = require_executable("servekit", "pip install -e .")
    result = _run(script, "serve", "--help")
    assert result.returncode == 0, result.stderr
    assert "REPOSITORY" in result.stdout and "--http-port" in result.stdout


def test_serve_on_a_missing_folder_exits_non_zero_with_a_clear_message(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_repository"
    result = _run(*servekit_command("serve", str(missing), "--host", HOST, "--http-port", str(free_port())))
    assert result.returncode != 0
    assert str(missing) in result.stderr
    assert "not a folder" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_on_a_file_exits_non_zero(tmp_path: Path) -> None:
    file = tmp_path / "models.yaml"
    file.write_text("not a repository\n", encoding="utf-8")
    result = _run(*servekit_command("serve", str(file), "--http-port", str(free_port())))
    assert result.returncode != 0
    assert "not a folder" in result.stderr


def test_serve_rejects_a_bad_flag_value(tmp_path: Path) -> None:
    result = _run(*servekit_command("serve", str(tmp_path), "--workers", "0"))
    assert result.returncode != 0
    assert "--workers" in result.stderr


# -- graceful shutdown ---------------------------------------------------------------------------------


@pytest.fixture()
def draining_server(tmp_path: Path) -> Iterator[tuple[ServerProcess, Path]]:
    marker = tmp_path / "batches.txt"
    write_slow_model(tmp_path / "models", delay_s=SLOW_DELAY_S, marker=marker)
    server = ServerProcess(tmp_path / "models", tmp_path / "server.log")
    server.start()
    try:
        yield server, marker
    finally:
        server.stop()


def test_sigterm_drains_in_flight_requests_then_exits_0(draining_server: tuple[ServerProcess, Path]) -> None:
    server, marker = draining_server
    count = 6
    sent = [threading.Event() for _ in range(count)]

    def call(n: int) -> tuple[int, dict[str, object]]:
        connection = http.client.HTTPConnection(HOST, server.port, timeout=30)
        try:
            body = _infer_body("x", "INT32", [1000 + n])
            connection.request("POST", "/v2/models/slow/infer", body, {"Content-Type": "application/json"})
            sent[n].set()  # the whole request is on the wire
            response = connection.getresponse()
            return response.status, json.loads(response.read())
        finally:
            connection.close()

    with ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(call, n) for n in range(count)]
        assert all(event.wait(10) for event in sent)
        deadline = time.monotonic() + 10
        while not (marker.exists() and marker.read_text()):  # the first batch is running in the model
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.01)
        time.sleep(0.1)  # let the server's loop read the other requests off their sockets
        server.terminate()

        # While the requests drain, the listening socket is already closed: new clients are refused.
        refused_while_draining = None
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if _connection_refused(server.port):
                refused_while_draining = server.process is not None and server.process.poll() is None
                break
            time.sleep(0.02)
        results = [future.result(timeout=30) for future in futures]

    for n, (status, body) in enumerate(results):
        assert status == 200, body
        outputs = body["outputs"]
        assert isinstance(outputs, list)
        assert outputs[0]["data"] == [1000 + n]
    assert server.wait(15) == 0, server.log()
    assert refused_while_draining is True, "new connections were still accepted during the drain"
    assert _connection_refused(server.port)
    batches = [int(line) for line in marker.read_text().split()]
    assert sum(batches) == count  # every request ran exactly once
    assert "Traceback" not in server.log()


# -- several workers ----------------------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2 :].split()[0] != "Z"


def _children(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of the live child processes of ``pid`` (Linux /proc)."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        # stat: "pid (comm) state ppid ..."; comm may hold spaces, so split after the last ')'.
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            children.append((int(entry.name), cmdline))
    return children


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc to see worker processes")
def test_two_workers_serve(tmp_path: Path) -> None:
    write_whoami_model(tmp_path / "models")
    server = ServerProcess(tmp_path / "models", tmp_path / "server.log", "--workers", "2")
    server.start()
    try:
        workers = {pid for pid, cmdline in _children(server.pid) if "multiprocessing.spawn" in cmdline
                   or "multiprocessing-fork" in cmdline}
        assert len(workers) == 2, _children(server.pid)

        def whoami(n: int) -> int:
            with httpx.Client(base_url=server.base_url, timeout=30) as client:  # a new connection each time
                response = client.post("/v2/models/whoami/infer", content=_infer_body("x", "INT32", [n]))
                assert response.status_code == 200, response.text
                [output] = response.json()["outputs"]
                pid: int = output["data"][0]
                return pid

        answered: set[int] = set()
        deadline = time.monotonic() + 20
        with ThreadPoolExecutor(16) as pool:
            while answered != workers and time.monotonic() < deadline:
                answered |= set(pool.map(whoami, range(32)))
                assert answered <= workers, (answered, workers)
        assert answered == workers, "only one worker ever answered"
        assert httpx.get(f"{server.base_url}/v2/health/ready").status_code == 200
    finally:
        code = server.stop()
    assert code == 0, server.log()
    assert not [pid for pid in workers if _alive(pid)], "a worker outlived the server"
