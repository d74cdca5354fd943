"""TorchServe 0.12's recorded answers, replayed against servekit over real sockets, in the recording's
order: the same model store (made with the real torch-model-archiver), the same requests, sent as
the recording sent them. Each answer is compared byte for byte (status, body, Content-Type and
TorchServe's other headers) where TorchServe's own bytes are deterministic, field by field where
they are not (describe: start times, pids; the echo handler's answers: request ids, folders), and
the few answers servekit knowingly gives otherwise are checked against what servekit documents.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.formats.torchserve.mar import recorded_store, require_archiver, require_torch

from .torchserve_server import DOCUMENT, Answer, TorchServeStyleServer, call, recorded_body

# Fields of TorchServe's describe that servekit does not give (it has no such limits).
NOT_GIVEN = {"startupTimeout", "maxRetryTimeoutInSec"}
# Per worker, TorchServe's own values vary from run to run.
VARIABLE_WORKER_FIELDS = {"id", "startTime", "pid"}
# Headers TorchServe sends on every answer, and that servekit sends as they are.
CONSTANT_HEADERS = ("pragma", "cache-control", "expires")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[TorchServeStyleServer]:
    """``servekit serve --model-store STORE``: no model until one is registered, as recorded."""
    require_torch()
    require_archiver()
    store = recorded_store(tmp_path / "store", tmp_path / "weights")
    process = TorchServeStyleServer(store, tmp_path / "server.log")
    process.start()
    try:
        yield process
    finally:
        process.stop()


def _request_body(request: dict[str, Any]) -> bytes | None:
    if "body_base64" in request:
        return base64.b64decode(request["body_base64"])
    return request["body"].encode("utf-8") if "body" in request else None


def _headers_of(entry: dict[str, Any]) -> dict[str, str]:
    return {name: value for name, value in entry["response"]["headers"]}


def check_bytes(name: str, entry: dict[str, Any], ours: Answer) -> None:
    """Status, body and headers exactly as TorchServe sent them (but x-request-id, a fresh UUID)."""
    recorded = _headers_of(entry)
    assert ours.status == entry["response"]["status"], (name, ours.body)
    assert ours.body == recorded_body(name), name
    assert ours.headers.get("content-type") == recorded.get("content-type"), name
    for header in (*CONSTANT_HEADERS, "content-length", *(h for h in recorded if h.startswith("x-") and
                                                           h != "x-request-id")):
        assert ours.headers.get(header) == recorded[header], (name, header)
    assert UUID.match(ours.headers["x-request-id"]), name


def check_describe(name: str, entry: dict[str, Any], ours: Answer) -> None:
    """Every field TorchServe gives, with its value, in TorchServe's order, servekit's own after."""
    assert ours.status == entry["response"]["status"], name
    theirs, mine = json.loads(recorded_body(name)), ours.json()
    assert len(mine) == len(theirs), name
    for recorded, described in zip(theirs, mine, strict=True):
        shared = [key for key in recorded if key not in NOT_GIVEN]
        assert list(described)[:len(shared)] == shared, name
        assert not NOT_GIVEN & set(described), name
        for key in shared:
            value = recorded[key]
            if key == "maxWorkers":  # servekit does not autoscale: maxWorkers is its instances
                assert described[key] == described["minWorkers"], (name, key)
            elif key == "workers":
                assert len(described[key]) == len(value), name
                for worker, recorded_worker in zip(described[key], value, strict=True):
                    assert list(worker) == list(recorded_worker), name
                    assert {k: v for k, v in worker.items() if k not in VARIABLE_WORKER_FIELDS} == {
                        k: v for k, v in recorded_worker.items() if k not in VARIABLE_WORKER_FIELDS}, name
            elif key == "jobQueueStatus":  # servekit's bound is its batching.max_queue_size, not 100
                assert described[key] == {"remainingCapacity": described["batching"]["maxQueueSize"],
                                          "pendingRequests": value["pendingRequests"]}, name
            else:
                assert described[key] == value, (name, key)


def check_echo(name: str, entry: dict[str, Any], ours: Answer) -> None:
    """The echo handler's view of a request: what it was given, field by field."""
    assert ours.status == entry["response"]["status"], name
    theirs, mine = json.loads(recorded_body(name)), ours.json()
    assert list(mine) == list(theirs), name
    for key in ("keys", "row", "batch", "model_yaml_config", "model_name"):
        assert mine[key] == theirs[key], (name, key)
    assert {k: v for k, v in mine["manifest"].items() if k != "createdOn"} == {
        k: v for k, v in theirs["manifest"].items() if k != "createdOn"}, name
    assert {k: v for k, v in mine["system_properties"].items() if k != "model_dir"} == {
        k: v for k, v in theirs["system_properties"].items() if k != "model_dir"}, name
    assert mine["request_id"] == ours.headers["x-request-id"], name
    # Headers: servekit's HTTP server hands names on lower-cased (TorchServe: as the client spelled
    # them); TorchServe adds url_path, and content-length 0 to a body-less request.
    given = {key.lower(): value for key, value in mine["headers"].items()}
    for key, value in theirs["headers"].items():
        if key in ("url_path", "content-length") or key == "Host":
            continue
        assert given[key.lower()] == value, (name, key)


def check_tensor(name: str, entry: dict[str, Any], ours: Answer) -> None:
    """A torch tensor answer, as torch.save writes it (the bytes hold a random serialization id)."""
    import torch

    assert ours.status == entry["response"]["status"]
    mine = torch.load(io.BytesIO(ours.body))
    assert torch.equal(mine, torch.load(io.BytesIO(recorded_body(name))))


def check_documented_difference(name: str, entry: dict[str, Any], ours: Answer) -> None:
    if name == "timeout_sleeping_handler":  # TorchServe: 500 "Worker died."; servekit: 504 (docs/torchserve.md)
        assert entry["response"]["status"] == 500 and ours.status == 504
        assert ours.json()["type"] == "RequestTimeoutException"
    elif name == "header_case_as_sent":  # servekit matches header names in any case (ts/context.py)
        assert ours.status == 200 and ours.body == recorded_body("return_str")
    else:
        raise AssertionError(f"no documented difference for {name}")


DIFFERENCES = {"timeout_sleeping_handler", "header_case_as_sent"}


def checker(name: str, entry: dict[str, Any]) -> Any:
    if name in DIFFERENCES:
        return check_documented_difference
    if name.startswith("describe_") and entry["request"]["api"] == "management" and entry["response"]["status"] == 200:
        return check_describe
    if name == "return_tensor":
        return check_tensor
    if '"request_id"' in entry["response"].get("body", ""):
        return check_echo
    return check_bytes


def fingerprints(store: Path) -> dict[str, str]:
    return {str(path.relative_to(store)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(store.rglob("*")) if path.is_file() and ".servekit" not in path.parts}


def test_every_recorded_answer_in_order(server: TorchServeStyleServer) -> None:
    store = server.repository
    before = fingerprints(store)
    ports = {"inference": server.port, "management": server.management_port}
    compared: dict[str, list[str]] = {}
    for entry in DOCUMENT["answers"]:
        if "request" not in entry:  # informational (batch sizes TorchServe saw): see test_torchserve.py
            continue
        request, name = entry["request"], entry["name"]
        ours = call(ports[request["api"]], request["method"], request["path"], _request_body(request),
                    request["headers"])
        check = checker(name, entry)
        check(name, entry, ours)
        compared.setdefault(check.__name__, []).append(name)
    assert len(compared["check_bytes"]) >= 40 and len(compared["check_describe"]) == 6
    assert len(compared["check_echo"]) >= 15
    assert fingerprints(store) == before  # the user's archives and folders, untouched
