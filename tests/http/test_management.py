"""The management API in-process: auth, registration, describe, scaling, routing, unregistering, errors."""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from starlette.testclient import TestClient

from servekit import __version__
from servekit.config import ServerSettings
from servekit.http.management import create_management_app
from servekit.management.archive import pack_model
from servekit.management.manager import ModelManager
from servekit.serving.registry import Registry
from tests.builders import write_onnx_model, write_repository

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A repository (the model store) holding model 'base', plus archives lin-1.zip and lin-2.zip."""
    root = tmp_path / "store"
    write_repository(root, {"base": None})
    source = tmp_path / "src" / "lin"
    write_onnx_model(source / "1")
    write_onnx_model(source / "2", np.ones((4, 3), dtype=np.float32))
    (source / "config.yaml").write_text("max_batch_size: 8\n")
    pack_model(source, root / "lin-1.zip", version=1)
    pack_model(source, root / "lin-2.zip", version=2)
    return root


@pytest.fixture
def client(store: Path) -> Iterator[TestClient]:
    settings = ServerSettings(repository=store, max_archive_bytes=1_000_000)
    registry = Registry(store)
    with TestClient(create_management_app(ModelManager(registry, settings), token=TOKEN)) as test_client:
        test_client.portal.call(registry.load_all)
        yield test_client
        test_client.portal.call(registry.close)


def call(client: TestClient, method: str, path: str, expected: int = 200, **kwargs: Any) -> Any:
    response = client.request(method, path, headers=AUTH, **kwargs)
    assert response.status_code == expected, response.text
    return response.json()


def test_a_missing_token_is_401_and_a_wrong_one_403(client: TestClient) -> None:
    missing = client.get("/models")
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert missing.json()["type"] == "InvalidKeyException"
    for header in (b"Bearer wrong-token", f"Basic {TOKEN}".encode(), f"Bearer {TOKEN}x".encode(),
                   "Bearer ünïcode".encode()):
        response = client.get("/models", headers={"Authorization": header})
        assert response.status_code == (401 if header.startswith(b"Basic") else 403), header
    assert client.get("/openapi.json").status_code == 401
    assert call(client, "GET", "/models")["models"][0]["modelName"] == "base"


def test_without_a_token_the_app_is_open(store: Path) -> None:
    manager = ModelManager(Registry(store), ServerSettings(repository=store))
    with TestClient(create_management_app(manager, token=None)) as open_client:
        assert open_client.get("/models").status_code == 200


def test_list_pages_through_models(client: TestClient, store: Path) -> None:
    call(client, "POST", "/models?url=lin-1.zip")
    first = call(client, "GET", "/models?limit=1")
    assert first == {"nextPageToken": "1", "models": [{"modelName": "base", "modelUrl": str(store / "base")}]}
    second = call(client, "GET", f"/models?limit=1&next_page_token={first['nextPageToken']}")
    assert [m["modelName"] for m in second["models"]] == ["lin"] and "nextPageToken" not in second
    assert call(client, "GET", "/models?limit=0", 400)["message"] == "limit must be from 1 to 1000"
    assert call(client, "GET", "/models?limit=ten", 400)["type"] == "BadRequestException"
    assert call(client, "GET", "/models?next_page_token=base", 400)["type"] == "BadRequestException"


def test_register_with_overrides_then_a_second_version(client: TestClient, store: Path) -> None:
    registered = call(client, "POST", "/models?url=lin-1.zip&batch_size=4&max_batch_delay=7&initial_workers=2"
                                      "&response_timeout=9")
    assert registered == {"status": 'Model "lin" Version: 1 registered with 2 initial workers', "modelName": "lin",
                          "modelVersion": "1", "serving": True}
    effective = yaml.safe_load((store / "lin" / "config.yaml").read_text())
    assert effective == {"max_batch_size": 4, "batching": {"max_queue_delay_ms": 7.0}, "instances": 2,
                         "execution_timeout_s": 9.0}
    [described] = call(client, "GET", "/models/lin")
    assert (described["modelVersion"], described["status"], described["batchSize"], described["maxBatchDelay"],
            described["minWorkers"], described["modelUrl"]) == ("1", "READY", 4, 7, 2, "lin-1.zip")
    assert (described["runtime"], described["responseTimeout"], described["loadedAtStartup"]) == ("onnx", 9, False)
    assert described["statistics"]["requests"] == 0 and described["default"] is True

    call(client, "POST", "/models?url=lin-2.zip")  # version_policy latest: 1 -> version 2 replaces version 1
    assert [d["modelVersion"] for d in call(client, "GET", "/models/lin")] == ["2"]
    assert sorted(p.name for p in (store / "lin").iterdir()) == [".servekit-registered", "1", "2", "config.yaml"]
    assert call(client, "POST", "/models?url=lin-2.zip", 409)["type"] == "ConflictStatusException"
    assert "apply to a new model" in call(client, "POST", "/models?url=lin-1.zip&batch_size=2", 400)["message"]
    assert not list((store / ".servekit" / "staging").iterdir())


def test_a_version_with_another_config_is_a_conflict(client: TestClient, tmp_path: Path, store: Path) -> None:
    call(client, "POST", "/models?url=lin-1.zip")
    other = tmp_path / "other" / "lin"
    write_onnx_model(other / "3")
    (other / "config.yaml").write_text("max_batch_size: 8\nonnx: {intra_op_threads: 2}\n")
    pack_model(other, store / "lin-3.zip")
    message = call(client, "POST", "/models?url=lin-3.zip", 409)["message"]
    assert "config.yaml differs from model 'lin' in onnx" in message
    assert not (store / "lin" / "3").exists()
    call(client, "POST", "/models?url=lin-3.zip&model_name=lin_fast")  # fine as a model of its own


def test_refused_sources(client: TestClient, tmp_path: Path, store: Path) -> None:
    outside = tmp_path / "outside.zip"
    (store / "lin-1.zip").rename(outside)
    assert call(client, "POST", f"/models?url={outside}", 403)["type"] == "InvalidKeyException"
    assert "outside the model store" in call(client, "POST", "/models?url=../outside.zip", 403)["message"]
    refused = call(client, "POST", "/models?url=https://example.com/lin-1.zip", 403)
    assert "registers local archives only" in refused["message"]
    assert call(client, "POST", "/models?url=gone.zip", 404) == {
        "code": 404, "type": "ModelNotFoundException", "message": "Model not found at: gone.zip"}
    assert call(client, "POST", "/models", 400)["message"] == "Parameter url is required."
    assert "is a folder" in call(client, "POST", "/models?url=base", 400)["message"]
    assert "cannot be a model name" in call(client, "POST", "/models?url=lin-2.zip&model_name=..", 400)["message"]


def test_a_malicious_archive_is_refused_and_leaves_nothing(client: TestClient, tmp_path: Path, store: Path) -> None:
    payload = b"owned"
    manifest = {"format": "servekit-archive/1", "name": "evil", "version": 1, "runtime": "onnx",
                "servekit_version": __version__, "files": {"../../escaped.txt": hashlib.sha256(payload).hexdigest()}}
    with zipfile.ZipFile(store / "evil.zip", "w") as archive:
        archive.writestr("MANIFEST.json", json.dumps(manifest))
        archive.writestr("../../escaped.txt", payload)
    def everything() -> list[Path]:
        return sorted(p for p in tmp_path.rglob("*") if ".servekit" not in p.parts)

    before = everything()
    refused = call(client, "POST", "/models?url=evil.zip", 400)
    assert "'..'" in refused["message"]
    assert everything() == before
    assert not list((store / ".servekit" / "staging").iterdir())


def test_a_version_that_fails_to_load_is_not_kept(client: TestClient, tmp_path: Path, store: Path) -> None:
    broken = tmp_path / "broken" / "bad"
    (broken / "1").mkdir(parents=True)
    (broken / "1" / "model.onnx").write_bytes(b"not onnx")
    pack_model(broken, store / "bad-1.zip")
    assert "failed to load" in call(client, "POST", "/models?url=bad-1.zip", 400)["message"]
    assert not (store / "bad").exists()
    assert call(client, "GET", "/models/bad", 404)["type"] == "ModelNotFoundException"


def test_scale_default_traffic_and_unregister(client: TestClient, store: Path) -> None:
    call(client, "POST", "/models?url=lin-1.zip")
    (store / "lin" / "config.yaml").write_text("max_batch_size: 8\nversion_policy: {all: true}\n")
    call(client, "POST", "/models?url=lin-2.zip")
    assert [d["modelVersion"] for d in call(client, "GET", "/models/lin")] == ["1", "2"]

    assert call(client, "PUT", "/models/lin?min_worker=3&max_worker=4", 202) == {
        "status": "Processing worker updates..."}
    assert all(d["minWorkers"] == 3 for d in call(client, "GET", "/models/lin"))
    assert call(client, "PUT", "/models/lin?min_worker=3&max_worker=2", 400)["message"].startswith("max_worker")
    assert call(client, "PUT", "/models/lin?min_worker=99", 400)["message"] == "min_worker must be from 1 to 64"

    assert call(client, "PUT", "/models/lin?min_worker=2&synchronous=true") == {
        "status": "Workers scaled to 2 for model: lin"}
    assert call(client, "PUT", "/models/lin/1/set-default") == {
        "status": 'Default version successfully updated for model "lin" to "1"'}
    assert [d["default"] for d in call(client, "GET", "/models/lin")] == [True, False]
    assert call(client, "PUT", "/models/lin/9/set-default", 404)["type"] == "ModelVersionNotFoundException"

    assert call(client, "PUT", "/models/lin/traffic", json={"1": 90, "2": 10})["traffic"] == {"1": 90, "2": 10}
    assert [d["trafficWeight"] for d in call(client, "GET", "/models/lin")] == [90, 10]
    assert "JSON object" in call(client, "PUT", "/models/lin/traffic", 400, json=[1])["message"]
    assert call(client, "PUT", "/models/lin/traffic", 400, content=b"{nope")["type"] == "BadRequestException"
    call(client, "PUT", "/models/lin/traffic", json={})
    assert [d["trafficWeight"] for d in call(client, "GET", "/models/lin")] == [None, None]

    assert call(client, "DELETE", "/models/lin/2") == {"status": 'Model "lin" unregistered'}
    assert [d["modelVersion"] for d in call(client, "GET", "/models/lin")] == ["1"]
    assert not (store / "lin" / "2").exists()
    assert call(client, "GET", "/models/lin/2", 404) == {"code": 404, "type": "ModelVersionNotFoundException",
                                                         "message": "Model version: 2 does not exist for model: lin"}
    assert call(client, "DELETE", "/models/lin/7", 404)["type"] == "ModelVersionNotFoundException"
    call(client, "DELETE", "/models/lin")
    assert not (store / "lin").exists()
    assert call(client, "GET", "/models/lin", 404) == {
        "code": 404, "type": "ModelNotFoundException", "message": "Model not found: lin"}
    assert not list((store / ".servekit" / "trash").iterdir())


def test_models_outside_the_store_are_unregistered_and_not_deleted(tmp_path: Path) -> None:
    repository, store = tmp_path / "repo", tmp_path / "store"
    write_repository(repository, {"base": None})
    settings = ServerSettings(repository=repository, model_store=store)
    registry = Registry(repository, store=store)
    with TestClient(create_management_app(ModelManager(registry, settings), token=None)) as open_client:
        open_client.portal.call(registry.load_all)
        response = open_client.delete("/models/base")
        assert response.status_code == 200 and response.json() == {"status": 'Model "base" unregistered'}
        assert open_client.get("/models/base").status_code == 404
        assert (repository / "base" / "1" / "model.onnx").exists()
        open_client.portal.call(registry.close)


def test_unregistering_deletes_only_what_servekit_unpacked(client: TestClient, store: Path) -> None:
    """The repository is the model store here: a model folder the user put there, and a version the
    user added to a registered model, stay on disk; what registrations unpacked goes."""
    before = sorted(p.relative_to(store) for p in (store / "base").rglob("*"))
    assert call(client, "DELETE", "/models/base") == {"status": 'Model "base" unregistered'}
    assert sorted(p.relative_to(store) for p in (store / "base").rglob("*")) == before
    assert (store / "lin-1.zip").is_file() and (store / "lin-2.zip").is_file()

    call(client, "POST", "/models?url=lin-1.zip")
    (store / "lin" / "config.yaml").write_text("max_batch_size: 8\nversion_policy: {all: true}\n")
    write_onnx_model(store / "lin" / "5")  # the user's own version, beside the registered one
    client.portal.call(client.app.state.manager.registry.load, "lin")  # type: ignore[attr-defined]
    assert [d["modelVersion"] for d in call(client, "GET", "/models/lin")] == ["1", "5"]
    call(client, "DELETE", "/models/lin/5")
    assert (store / "lin" / "5" / "model.onnx").is_file()  # the user's: unregistered, kept
    assert [d["modelVersion"] for d in call(client, "GET", "/models/lin")] == ["1"]
    call(client, "DELETE", "/models/lin")
    assert not (store / "lin").exists() and (store / "lin-1.zip").is_file()


def test_a_registered_version_in_the_users_model_folder_goes_alone(client: TestClient, store: Path) -> None:
    write_onnx_model(store / "lin" / "1")  # the user's model folder, version 1
    (store / "lin" / "config.yaml").write_text("max_batch_size: 8\nversion_policy: {all: true}\n")
    client.portal.call(client.app.state.manager.registry.load, "lin")  # type: ignore[attr-defined]
    call(client, "POST", "/models?url=lin-2.zip")  # adds version 2, marked as servekit's
    call(client, "DELETE", "/models/lin")
    assert sorted(p.name for p in (store / "lin").iterdir()) == ["1", "config.yaml"]


def test_unknown_routes_answer_in_the_same_shape(client: TestClient) -> None:
    assert call(client, "GET", "/nothing", 404) == {"code": 404, "type": "ResourceNotFoundException", "message":
                                                    "Requested resource is not found, please refer to API document."}
    assert call(client, "PATCH", "/models", 405)["type"] == "MethodNotAllowedException"
    missing = call(client, "GET", "/models/base/one", 404)
    assert missing["message"] == "Model version: one does not exist for model: base"

    response = client.get("/models", headers=AUTH)  # JSON as TorchServe prints it, with its headers
    assert response.content == json.dumps(response.json(), indent=2).encode() + b"\n"
    assert response.headers["cache-control"] == "no-cache; no-store, must-revalidate, private"


def test_describe_and_statistics_say_where_each_instance_runs(tmp_path: Path) -> None:
    """device: [cpu, cpu] with 3 instances (round-robin over the list; no GPU here): each worker names its device."""
    from servekit.http import create_app

    root = write_repository(tmp_path / "spread", {"spread": "instances: 3\ndevice: [cpu, cpu]\n"})
    settings = ServerSettings(repository=root, max_archive_bytes=1_000_000)
    registry = Registry(root)
    with TestClient(create_management_app(ModelManager(registry, settings), token=TOKEN)) as management:
        management.portal.call(registry.load_all)
        try:
            [described] = call(management, "GET", "/models/spread")
        finally:
            management.portal.call(registry.close)
    assert described["devices"] == ["cpu", "cpu", "cpu"] and described["device"] == "cpu"
    assert len(described["workers"]) == 3 and not any(worker["gpu"] for worker in described["workers"])
    assert described["deviceType"] == "cpu"
    with TestClient(create_app(ServerSettings(repository=root))) as inference:
        [stats] = inference.get("/v2/models/spread/stats").json()["model_stats"]
        config = inference.get("/v2/models/spread/config").json()
    assert stats["devices"] == ["cpu", "cpu", "cpu"]
    assert config["instance_group"] == [{"name": "spread_0", "count": 3, "kind": "KIND_CPU"}]
