"""A TorchServe user's workflow over real sockets: `.mar` archives made by the real archiver,
served from the start with ``--models`` and registered over the management API, predictions from
32 concurrent clients batched by the model's batchSize, scaling, a hung handler answered 504 and
replaced, and unregistering that leaves the user's archives as they were."""

from __future__ import annotations

import hashlib
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from servekit.management.archive import pack_model
from tests.builders import write_onnx_model
from tests.formats.torchserve.mar import HANDLERS, archive, recorded_store, require_archiver, require_torch

from .torchserve_server import TorchServeStyleServer, call, recorded_body

TEXT = {"Content-Type": "text/plain"}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_torch()
    require_archiver()
    folder = tmp_path_factory.mktemp("ts")
    store = recorded_store(folder / "store", folder / "weights")
    archive(store, "batch", HANDLERS / "batch_handler.py")
    return store


@pytest.fixture(scope="module")
def server(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TorchServeStyleServer]:
    """As `torchserve --start --model-store STORE --models tiny=tiny.mar,echo.mar`."""
    process = TorchServeStyleServer(store, tmp_path_factory.mktemp("logs") / "ts.log",
                                    "--models", "tiny=tiny.mar,echo.mar")
    process.start()
    try:
        yield process
    finally:
        process.stop()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def describe(server: TorchServeStyleServer, model: str) -> dict[str, object]:
    answer = call(server.management_port, "GET", f"/models/{model}")
    assert answer.status == 200, answer.body
    [version] = answer.json()
    assert isinstance(version, dict)
    return version


def test_models_at_start_answer_as_torchserve(server: TorchServeStyleServer) -> None:
    assert [m["modelName"] for m in call(server.management_port, "GET", "/models").json()["models"]] == [
        "echo", "tiny"]
    assert call(server.port, "GET", "/ping").body == recorded_body("ping")
    answer = call(server.port, "POST", "/predictions/tiny", "1,2,3", TEXT)
    assert (answer.status, answer.body) == (200, recorded_body("tiny_text"))
    assert describe(server, "tiny")["loadedAtStartup"] is True
    assert describe(server, "tiny")["modelVersion"] == "1.0"


def test_32_concurrent_clients_are_batched_by_batch_size(server: TorchServeStyleServer) -> None:
    registered = call(server.management_port, "POST",
                      "/models?url=echo.mar&model_name=echo8&batch_size=8&max_batch_delay=200&initial_workers=1")
    assert registered.json() == {"status": 'Model "echo8" Version: 1.0 registered with 1 initial workers'}
    answers: dict[int, dict[str, object]] = {}

    def client(index: int) -> None:  # each batch sleeps 0.3 s: the others queue meanwhile
        reply = call(server.port, "POST", "/predictions/echo8", str(index),
                     {**TEXT, "X-Mode": "sleep", "X-Seconds": "0.3"})
        assert reply.status == 200, reply.body
        answers[index] = reply.json()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == list(range(32))
    assert all(answer["row"] == {"body": {"type": "str", "value": str(i)}} for i, answer in answers.items())
    statistics = describe(server, "echo8")["statistics"]
    assert isinstance(statistics, dict)
    assert (statistics["requests"], statistics["rows"]) == (32, 32)
    # batchSize 8: batches of up to 8 requests, and as the model's statistics count them
    assert max(int(str(answer["batch"])) for answer in answers.values()) == 8
    assert statistics["batches"] < 32 and statistics["mean_batch_size"] > 1
    assert call(server.management_port, "DELETE", "/models/echo8").status == 200


def test_scale_then_describe_the_workers(server: TorchServeStyleServer) -> None:
    scaled = call(server.management_port, "PUT", "/models/tiny?min_worker=2&synchronous=true")
    assert (scaled.status, scaled.json()) == (200, {"status": "Workers scaled to 2 for model: tiny"})
    described = describe(server, "tiny")
    assert (described["minWorkers"], len(described["workers"])) == (2, 2)  # type: ignore[arg-type]
    later = call(server.management_port, "PUT", "/models/tiny?min_worker=1")
    assert (later.status, later.json()) == (202, {"status": "Processing worker updates..."})
    assert describe(server, "tiny")["minWorkers"] == 1
    assert call(server.port, "POST", "/predictions/tiny", "1,2,3", TEXT).body == recorded_body("tiny_text")


def test_a_hung_handler_answers_504_and_the_model_answers_again(server: TorchServeStyleServer) -> None:
    # echo's model_config.yaml: responseTimeout 2 -> servekit's execution_timeout_s
    hung = call(server.port, "POST", "/predictions/echo", "x", {**TEXT, "X-Mode": "sleep", "X-Seconds": "6"})
    assert hung.status == 504 and hung.json()["type"] == "RequestTimeoutException"
    again = call(server.port, "POST", "/predictions/echo", "x", {**TEXT, "X-Mode": "str"})
    assert (again.status, again.body) == (200, b"plain text")


def test_unregister_leaves_the_archive_and_removes_what_servekit_unpacked(server: TorchServeStyleServer,
                                                                         store: Path) -> None:
    before = sha256(store / "batch.mar")
    assert call(server.management_port, "POST", "/models?url=batch.mar").status == 200
    [area] = (store / ".servekit").glob("unpacked-*")
    assert (area / "batch" / "1" / "MAR-INF" / "MANIFEST.json").is_file()
    assert call(server.port, "POST", "/predictions/batch", "hello", TEXT).json()["body"] == "hello"
    removed = call(server.management_port, "DELETE", "/models/batch")
    assert removed.json() == {"status": 'Model "batch" unregistered'}
    assert call(server.port, "POST", "/predictions/batch", "hello", TEXT).status == 404
    assert sha256(store / "batch.mar") == before and not (area / "batch").exists()


def test_a_second_archive_under_one_name_is_the_next_version_by_its_label(server: TorchServeStyleServer,
                                                                           store: Path,
                                                                           tmp_path: Path) -> None:
    other = archive(tmp_path, "batch2", HANDLERS / "batch_handler.py", version="2.5")
    (store / "batch-2.5.mar").write_bytes(other.read_bytes())
    management = server.management_port
    assert call(management, "POST", "/models?url=batch.mar&model_name=twice").status == 200
    second = call(management, "POST", "/models?url=batch-2.5.mar&model_name=twice")
    assert second.json() == {"status": 'Model "twice" Version: 2.5 registered with 1 initial workers'}
    versions = call(management, "GET", "/models/twice/all").json()
    assert [(v["modelVersion"], v["default"]) for v in versions] == [("1.0", True), ("2.5", False)]
    assert call(server.port, "POST", "/predictions/twice/2.5", "x", TEXT).status == 200
    assert call(server.port, "GET", "/v2/models/twice/versions/2.5/ready").status == 200  # OIP: the label too
    duplicate = call(management, "POST", "/models?url=batch-2.5.mar&model_name=twice")
    assert duplicate.status == 409 and duplicate.json()["message"] == \
        "Model version 2.5 is already registered for model twice"
    assert call(management, "DELETE", "/models/twice/2.5").status == 200
    assert [v["modelVersion"] for v in call(management, "GET", "/models/twice/all").json()] == ["1.0"]
    assert call(management, "DELETE", "/models/twice").status == 200


def test_models_all_serves_every_archive_and_exit_removes_what_was_unpacked(store: Path, tmp_path: Path) -> None:
    own = tmp_path / "store"
    shutil.copytree(store, own, ignore=shutil.ignore_patterns(".servekit", "batch-2.5.mar"))
    store = own
    write_onnx_model(tmp_path / "lin" / "1")  # a servekit archive: --models refuses it, the rest serve
    pack_model(tmp_path / "lin", store / "lin-1.zip", version=1)
    process = TorchServeStyleServer(store, tmp_path / "all.log", "--models", "all,lin-1.zip")
    process.start()
    try:
        listed = call(process.management_port, "GET", "/models").json()["models"]
        names = [m["modelName"] for m in listed]
        assert names == ["batch", "eager", "echo", "echofn", "tiny", "tinydir", "tinytgz"], process.log()
        assert call(process.port, "POST", "/predictions/tinydir", "1,2,3", TEXT).body == recorded_body("tiny_text")
        assert "--models lin-1.zip: lin-1.zip is not a TorchServe archive" in process.log()
    finally:
        assert process.stop() == 0
    assert not list((store / ".servekit").glob(f"unpacked-{process.pid}"))
