"""The server as a process: command line, graceful SIGTERM drain, several workers."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

import servekit
from tests.conftest import require_executable
from tests.gate import Gate, wait_for

from .harness import HOST, ServerProcess, free_port, servekit_command
from .repos import write_gated_model, write_whoami_model
from .scrape import gauge


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


def _refused_while_alive(server: ServerProcess) -> bool:
    """Whether a new connection to the HTTP port is refused while the server process still runs."""
    wait_for(lambda: _connection_refused(server.port) or server.process is None or server.process.poll() is not None,
             "the listening socket to close")
    return server.process is not None and server.process.poll() is None and _connection_refused(server.port)


def _call(server: ServerProcess, value: int) -> tuple[int, dict[str, object]]:
    connection = http.client.HTTPConnection(HOST, server.port, timeout=60)
    try:
        body = _infer_body("x", "INT32", [value])
        connection.request("POST", "/v2/models/gated/infer", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def _drain_and_check(server: ServerProcess, gate: Gate, values: list[int], futures: list[Any],
                     refuses: bool = True) -> None:
    """SIGTERM while ``values`` are in flight (held at the gate), then: new connections refused while
    the server drains (``refuses``), every request answered with its own rows, exit 0, every request
    run once. With --workers N uvicorn's supervisor keeps the listening socket open until its workers
    have exited, so a new connection waits in the backlog instead of being refused: not checked then."""
    server.terminate()
    # The gate is shut, so the server cannot have exited yet.
    refused_while_draining = _refused_while_alive(server) if refuses else True
    gate.open()
    results = [future.result(timeout=60) for future in futures]
    for value, (status, body) in zip(values, results, strict=True):
        assert status == 200, body
        outputs = body["outputs"]
        assert isinstance(outputs, list)
        assert outputs[0]["data"] == [value]
    assert server.wait(30) == 0, server.log()
    assert refused_while_draining, "new connections were still accepted during the drain"
    assert _connection_refused(server.port)
    assert sorted(value for batch in gate.batches() for value in batch) == sorted(values)  # each ran once
    assert "Traceback" not in server.log()


def test_sigterm_drains_in_flight_requests_then_exits_0(tmp_path: Path) -> None:
    gate = Gate(tmp_path / "gate")
    write_gated_model(tmp_path / "models", gate.folder)
    server = ServerProcess(tmp_path / "models", tmp_path / "server.log").start()
    try:
        values = [1000 + n for n in range(6)]
        with ThreadPoolExecutor(len(values)) as pool:
            futures = [pool.submit(_call, server, value) for value in values]
            gate.wait_batches(1)  # one batch is in the model; the rest must be read off their sockets and queued
            wait_for(lambda: gauge(server.metrics_url, "servekit_inflight_requests", "gated") == len(values),
                     "every request accepted")
            _drain_and_check(server, gate, values, futures)
        assert len(gate.batches()) == 2  # the first alone, the five that waited together
    finally:
        gate.open()
        server.stop()


# -- several workers ----------------------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2 :].split()[0] != "Z"


def _workers(pid: int) -> set[int]:
    """The worker processes of server ``pid`` (multiprocessing's spawned children, not its resource tracker)."""
    return {child for child, cmdline in _children(pid) if "multiprocessing.spawn" in cmdline
            or "multiprocessing-fork" in cmdline}


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


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc to see worker processes")
def test_sigterm_drains_every_busy_worker_then_exits_0(tmp_path: Path) -> None:
    gate = Gate(tmp_path / "gate")
    write_gated_model(tmp_path / "models", gate.folder)
    server = ServerProcess(tmp_path / "models", tmp_path / "server.log", "--workers", "2").start()
    try:
        workers = _workers(server.pid)
        assert len(workers) == 2, _children(server.pid)
        values: list[int] = []
        futures = []
        with ThreadPoolExecutor(64) as pool:
            # Each request on its own connection, until both workers hold a batch at the gate (the kernel
            # spreads connections; the rest of each worker's requests wait in its queue).
            while set(gate.pids()) != workers:
                assert len(values) < 64, f"only {set(gate.pids())} of {workers} ever got a request"
                values.append(2000 + len(values))
                futures.append(pool.submit(_call, server, values[-1]))
                wait_for(lambda: gauge(server.metrics_url, "servekit_inflight_requests", "gated") == len(values),
                         "the request accepted by a worker")
            _drain_and_check(server, gate, values, futures, refuses=False)
    finally:
        gate.open()
        server.stop()
    assert not [pid for pid in workers if _alive(pid)], "a worker outlived the server"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux to run --workers")
def test_poll_interval_with_several_workers_serves_and_forgets_models_in_every_worker(tmp_path: Path) -> None:
    repository = tmp_path / "models"
    write_whoami_model(repository)
    server = ServerProcess(repository, tmp_path / "server.log", "--workers", "2", "--poll-interval", "0.2").start()
    try:
        workers = _workers(server.pid)
        assert len(workers) == 2, _children(server.pid)

        def answers(model: str) -> dict[int, int]:
            """worker pid -> HTTP status for ``model``, asked on new connections until both workers answered."""
            seen: dict[int, int] = {}
            deadline = time.monotonic() + 60
            while set(seen) != workers:
                assert time.monotonic() < deadline, f"only {set(seen)} of {workers} answered: {server.log()[-3000:]}"
                with httpx.Client(base_url=server.base_url, timeout=30) as client:
                    who = client.post("/v2/models/whoami/infer", content=_infer_body("x", "INT32", [0]))
                    pid = who.json()["outputs"][0]["data"][0]
                    seen[pid] = client.post(f"/v2/models/{model}/infer",
                                            content=_infer_body("x", "INT32", [7])).status_code
            return seen

        def every_worker_answers(status: int) -> bool:
            statuses = answers("late")
            print("late: status by worker", statuses)  # shown when the test fails
            return set(statuses.values()) == {status}

        write_whoami_model(tmp_path / "staging", name="late")
        (tmp_path / "staging" / "late").rename(repository / "late")  # one rename: a poll sees all of it or none
        wait_for(lambda: every_worker_answers(200), "every worker serving the new model", timeout_s=90)
        shutil.rmtree(repository / "late")
        wait_for(lambda: every_worker_answers(404), "every worker forgetting the removed model", timeout_s=90)
    finally:
        code = server.stop()
    assert code == 0, server.log()
