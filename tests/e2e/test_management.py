"""The management API over real ports: tokens, registration from the store and from URLs, refusals,
unregistering under load, the archive command and the --workers rule."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from servekit import __version__
from tests.gate import Gate, wait_for

from .harness import HOST, free_port, servekit_command
from .managed import ManagedServer, serve_folder, write_versioned_model

SOURCE_FILES_LIMIT = 200_000  # --max-archive-bytes of the server below


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    folder = tmp_path_factory.mktemp("site")
    (folder / "archives").mkdir()
    (folder / "other").mkdir()
    with serve_folder(folder) as url:
        yield url, folder


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gate]:
    shut = Gate(tmp_path_factory.mktemp("gate"))
    yield shut
    shut.open()


@pytest.fixture(scope="module")
def server(site: tuple[str, Path], gate: Gate, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedServer]:
    """A generated token; URLs below SITE/archives/ allowed; archives up to 200 kB."""
    repository = tmp_path_factory.mktemp("managed") / "models"
    write_versioned_model(repository / "slowpoke", (1,))
    # Unregistered by a test: its requests wait at a gate (tests/gate.py) until that test lets them through.
    write_versioned_model(repository / "doomed", (1,), parameters={"gate": str(gate)})
    process = ManagedServer(repository, tmp_path_factory.mktemp("logs") / "managed.log",
                            "--allowed-url", f"{site[0]}/archives/",
                            "--max-archive-bytes", str(SOURCE_FILES_LIMIT), token=None)
    process.start()
    try:
        yield process
    finally:
        gate.open()
        process.stop()


def token_of(server: ManagedServer) -> str:
    return (server.repository / ".servekit" / "management-token").read_text().strip()


def test_the_generated_token_is_in_an_owner_only_file_and_never_logged(server: ManagedServer) -> None:
    path = server.repository / ".servekit" / "management-token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    token = token_of(server)
    assert len(token) >= 32
    assert str(path) in server.log() and token not in server.log()
    assert f"management API on http://127.0.0.1:{server.management_port} (bearer token)" in server.log()
    with httpx.Client(base_url=server.management_url, timeout=10) as anonymous:
        missing = anonymous.get("/models")
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        wrong = anonymous.get("/models", headers={"Authorization": "Bearer not-the-token"})
        assert wrong.status_code == 403 and wrong.json() == {"code": 403, "type": "InvalidKeyException",
                                                             "message": "wrong management token"}
    with server.management(token_of(server)) as client:
        listed = [m["modelName"] for m in client.get("/models").json()["models"]]
        # Other tests of this module register "fetched" and unregister "doomed": any order may have run.
        assert "slowpoke" in listed and set(listed) <= {"slowpoke", "doomed", "fetched"}, listed
        assert listed == sorted(listed)


def pack(tmp_path: Path, name: str, version: int, extra_bytes: int = 0) -> Path:
    source = write_versioned_model(tmp_path / "src" / name, (version,))
    if extra_bytes:
        (source / str(version) / "weights.bin").write_bytes(os.urandom(extra_bytes))
    output = tmp_path / f"{name}-{version}.zip"
    done = subprocess.run(servekit_command("archive", str(source), "-o", str(output)), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"wrote {output}: model {name} version {version} (python," in done.stdout
    return output


def test_register_from_an_allowed_url_and_refuse_the_rest(server: ManagedServer, site: tuple[str, Path],
                                                         tmp_path: Path) -> None:
    url, folder = site
    archive = pack(tmp_path, "fetched", 3)
    (folder / "archives" / archive.name).write_bytes(archive.read_bytes())
    (folder / "other" / archive.name).write_bytes(archive.read_bytes())
    with server.management(token_of(server)) as client, httpx.Client(timeout=10) as inference:
        registered = client.post("/models", params={"url": f"{url}/archives/{archive.name}", "initial_workers": 2})
        assert registered.status_code == 200, registered.text
        answer = server.infer(inference, "fetched")
        assert answer.status_code == 200 and answer.json()["outputs"][0]["data"] == [3]
        [described] = client.get("/models/fetched").json()
        assert described["modelUrl"] == f"{url}/archives/{archive.name}" and described["minWorkers"] == 2
        for refused in (f"{url}/other/{archive.name}", f"{url}/archives/../other/{archive.name}",
                        "https://example.com/fetched-3.zip"):
            response = client.post("/models", params={"url": refused, "model_name": "nope"})
            assert response.status_code == 403, (refused, response.text)
            assert response.json()["type"] == "InvalidKeyException"
        assert "HTTP 404" in client.post("/models", params={"url": f"{url}/archives/none.zip"}).json()["message"]
    assert not (server.repository / "nope").exists()


def forged(path: Path, members: dict[str, bytes], link: str | None = None) -> Path:
    files = {name: hashlib.sha256(data).hexdigest() for name, data in members.items()}
    manifest = {"format": "servekit-archive/1", "name": "evil", "version": 1, "runtime": "python",
                "servekit_version": __version__, "files": files}
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("MANIFEST.json", json.dumps(manifest))
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = ((stat.S_IFLNK | 0o777) if name == link else (stat.S_IFREG | 0o644)) << 16
            archive.writestr(info, data)
    return path


def test_malicious_archives_are_refused_with_nothing_written_outside_the_store(server: ManagedServer,
                                                                               tmp_path: Path) -> None:
    store = server.repository
    cases = {
        "slip.zip": (forged(store / "slip.zip", {"1/../../../escaped.txt": b"owned"}), 400, "'..'"),
        "absolute.zip": (forged(store / "absolute.zip", {str(tmp_path / "escaped.txt"): b"owned"}), 400,
                         "absolute path"),
        "link.zip": (forged(store / "link.zip", {"1/model.bin": b"/etc/passwd"}, link="1/model.bin"), 400,
                     "link"),
        "big.zip": (pack(tmp_path, "big", 1, extra_bytes=SOURCE_FILES_LIMIT + 1), 413, "over the limit"),
    }
    (store / "big.zip").write_bytes(cases["big.zip"][0].read_bytes())
    outside_before = sorted(p.name for p in store.parent.parent.rglob("*") if store not in p.parents)
    with server.management(token_of(server)) as client:
        for name, (_, status, message) in cases.items():
            response = client.post("/models", params={"url": name})
            assert response.status_code == status, (name, response.text)
            assert message in response.json()["message"], (name, response.json())
    outside_after = sorted(p.name for p in store.parent.parent.rglob("*") if store not in p.parents)
    assert outside_after == outside_before
    assert not (tmp_path / "escaped.txt").exists()
    assert not [p for p in store.iterdir() if p.is_dir() and p.name in ("evil", "big")]
    assert not list((store / ".servekit" / "staging").iterdir())


def test_unregister_lets_in_flight_requests_finish_then_answers_404(server: ManagedServer, gate: Gate) -> None:
    with ThreadPoolExecutor(2) as pool, httpx.Client(timeout=60) as inference:
        in_flight = pool.submit(server.infer, inference, "doomed")
        gate.wait_batches(1)  # the request is computing, held at the gate
        with server.management(token_of(server)) as client:
            deleting = pool.submit(client.delete, "/models/doomed")
            # While it drains, the model takes no new request (503), and the DELETE waits for the drain.
            wait_for(lambda: inference.get(f"{server.base_url}/v2/models/doomed/ready").status_code != 200,
                     "'doomed' draining")  # asked without queueing a request behind the held one
            refused = server.infer(inference, "doomed")
            assert refused.status_code == 503 and "being unregistered" in refused.json()["error"], refused.text
            assert not deleting.done() and not in_flight.done()
            gate.open()
            assert deleting.result(timeout=30).status_code == 200
        answer = in_flight.result(timeout=30)
        assert answer.status_code == 200 and answer.json()["outputs"][0]["data"] == [1]
        gone = server.infer(inference, "doomed")
        assert gone.status_code == 404 and "unknown model 'doomed'" in gone.json()["error"]
    # the user put doomed's folder in the repository: unregistered, never deleted
    assert sorted(p.name for p in (server.repository / "doomed").iterdir()) == ["1", "config.yaml", "handler.py"]
    assert gate.batches() == [[0.0]]  # the refused requests never ran


def test_archive_inspect_checks_every_checksum(tmp_path: Path) -> None:
    archive = pack(tmp_path, "inspected", 2)
    done = subprocess.run(servekit_command("archive", "--inspect", str(archive)), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert "every checksum matches" in done.stdout and "name: inspected\nversion: 2\nruntime: python" in done.stdout
    assert "handler.py  sha256:" in done.stdout
    bad = forged(tmp_path / "bad.zip", {"../x": b"x"})
    done = subprocess.run(servekit_command("archive", "--inspect", str(bad)), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1 and "'..'" in done.stderr


def test_without_auth_and_with_several_workers(tmp_path: Path) -> None:
    write_versioned_model(tmp_path / "models" / "m", (1,))
    process = ManagedServer(tmp_path / "models", tmp_path / "open.log", "--no-management-auth", token=None)
    process.start()
    try:
        with httpx.Client(base_url=process.management_url, timeout=10) as anonymous:
            assert anonymous.get("/models").status_code == 200
        assert "NO authentication" in process.log()
        assert not (tmp_path / "models" / ".servekit" / "management-token").exists()
    finally:
        assert process.stop() == 0  # SIGTERM stops the management server with the rest, cleanly
    env = {key: value for key, value in os.environ.items() if not key.startswith("SERVEKIT_")}
    refused = subprocess.run(
        servekit_command("serve", str(tmp_path / "models"), "--host", HOST, "--http-port", str(free_port()),
                         "--workers", "2", "--management-port", str(free_port())),
        capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL)
    assert refused.returncode != 0 and "the management API needs --workers 1" in refused.stderr
