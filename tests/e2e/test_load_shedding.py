"""Over HTTP with a real server: a request whose ``timeout_ms`` passes in the queue gets 504 and never
runs; a full queue answers 503 with Retry-After. The models hold their batches at a gate (tests/gate.py),
so each step waits for an observable state (a batch at the gate, a queue depth), never for time to pass."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.gate import Gate, wait_for

from .harness import ServerProcess
from .repos import write_gated_model
from .scrape import gauge

TIMEOUT_MS = 300


@pytest.fixture(scope="module")
def gates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Gate]:
    folder = tmp_path_factory.mktemp("gates")
    return {name: Gate(folder / name) for name in ("timed", "bounded")}


@pytest.fixture(scope="module")
def server(gates: dict[str, Gate], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """``timed``: timeout_ms 300; ``bounded``: at most 2 requests waiting. One instance each."""
    repository = tmp_path_factory.mktemp("shedding") / "models"
    write_gated_model(repository, gates["timed"].folder, name="timed", batching={"timeout_ms": TIMEOUT_MS})
    write_gated_model(repository, gates["bounded"].folder, name="bounded", batching={"max_queue_size": 2})
    process = ServerProcess(repository, tmp_path_factory.mktemp("logs") / "shedding.log")
    process.start()
    try:
        yield process
    finally:
        for gate in gates.values():
            gate.open()  # a failed test must not leave the server holding batches
        process.stop()


def _post(client: httpx.Client, server: ServerProcess, model: str, value: int,
          timeout_s: float = 60.0) -> httpx.Response:
    body = {"inputs": [{"name": "x", "datatype": "INT32", "shape": [1, 1], "data": [value]}]}
    return client.post(f"{server.base_url}/v2/models/{model}/infer", json=body, timeout=timeout_s)


def test_a_request_whose_timeout_passes_in_the_queue_gets_504_and_never_runs(
        server: ServerProcess, gates: dict[str, Gate]) -> None:
    gate = gates["timed"]
    with ThreadPoolExecutor(1) as pool, httpx.Client() as client:
        first = pool.submit(_post, client, server, "timed", 1)
        gate.wait_batches(1)  # the only instance is held by the first request
        # The second waits in the queue while the gate stays shut: its answer can only come from its
        # timeout, and must come once that passes (not when the instance is free again).
        late = _post(client, server, "timed", 2, timeout_s=20.0)
        assert late.status_code == 504, late.text
        assert "deadline" in late.json()["error"]
        gate.open()
        assert first.result(timeout=30).status_code == 200
        after = _post(client, server, "timed", 3)
        assert after.status_code == 200 and after.json()["outputs"][0]["data"] == [3]
    assert gate.batches() == [[1.0], [3.0]]  # the late request never ran


def test_a_full_queue_answers_503_with_retry_after(server: ServerProcess, gates: dict[str, Gate]) -> None:
    gate = gates["bounded"]
    with ThreadPoolExecutor(3) as pool, httpx.Client() as client:
        first = pool.submit(_post, client, server, "bounded", 1)
        gate.wait_batches(1)
        queued = []
        for value in (2, 3):  # one after the other, so that the order they were queued in is known
            queued.append(pool.submit(_post, client, server, "bounded", value))
            waiting = value - 1
            wait_for(lambda waiting=waiting: gauge(server.metrics_url, "servekit_queue_depth", "bounded") == waiting,
                     f"{waiting} requests queued")
        full = _post(client, server, "bounded", 4)
        assert full.status_code == 503, full.text
        assert "queue is full" in full.json()["error"]
        assert int(full.headers["retry-after"]) >= 1
        gate.open()
        answers = [future.result(timeout=30) for future in (first, *queued)]
    assert [answer.json()["outputs"][0]["data"] for answer in answers] == [[1], [2], [3]]
    assert gate.batches() == [[1.0], [2.0, 3.0]]  # the refused request never ran; the queued two ran together
