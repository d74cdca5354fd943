"""Versions without downtime: continuous load over real HTTP while versions are added, switched,
scaled and removed through the management API, the repository extension and repository polling.
Not one request may fail, and a version that did not change is never loaded again."""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .harness import servekit_command
from .managed import ManagedServer, wait_until, write_versioned_model

LOAD_THREADS = 4


class Load:
    """Threads sending unversioned inference requests until stopped; every answer is recorded."""

    def __init__(self, server: ManagedServer) -> None:
        self.server = server
        self.failures: list[str] = []
        self.versions: Counter[int] = Counter()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(LOAD_THREADS)]

    def _run(self, number: int) -> None:
        with httpx.Client(timeout=30) as client:
            sent = 0
            while not self._stop.is_set():
                sent += 1
                parameters = {"routing_key": f"user-{number}-{sent % 5}"} if number % 2 else None
                try:
                    response = self.server.infer(client, "m", parameters)
                    outcome = (response.json()["outputs"][0]["data"][0] if response.status_code == 200
                               else f"HTTP {response.status_code}: {response.text}")
                except httpx.HTTPError as exc:
                    outcome = f"{type(exc).__name__}: {exc}"
                with self._lock:
                    if isinstance(outcome, int):
                        self.versions[outcome] += 1
                    else:
                        self.failures.append(outcome)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def seen(self) -> int:
        with self._lock:
            return sum(self.versions.values())

    def settle(self, requests: int = 20) -> None:
        """Let at least ``requests`` more answers come back."""
        target = self.seen() + requests
        wait_until(lambda: self.seen() >= target, what=f"{requests} more answers")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ManagedServer]:
    repository = tmp_path / "models"
    write_versioned_model(repository / "m", (1,), version_policy={"latest": 2},
                          parameters={"delay_s": 0.005, "marker": str(tmp_path / "loads.txt")})
    process = ManagedServer(repository, tmp_path / "server.log", "--poll-interval", "0.2")
    process.start()
    try:
        yield process
    finally:
        process.stop()


def serving(client: httpx.Client) -> list[str]:
    return [row["modelVersion"] for row in client.get("/models/m").json()]


def add_version_on_disk(model: Path, version: int) -> None:
    """Write a version folder beside the model (hidden) and rename it into place: polls see all or nothing."""
    staged = model.parent / f".staged-{version}"
    staged.mkdir()
    (staged / "notes.txt").write_text(f"version {version}\n")
    staged.rename(model / str(version))


def loads(tmp_path: Path) -> list[int]:
    return [int(line) for line in (tmp_path / "loads.txt").read_text().split()]


def test_zero_failed_requests_while_versions_change(server: ManagedServer, tmp_path: Path) -> None:
    model = server.repository / "m"
    archive_source = tmp_path / "src" / "m"
    shutil.copytree(model, archive_source, ignore=shutil.ignore_patterns("1", "__pycache__"))
    (archive_source / "2").mkdir()
    subprocess.run(servekit_command("archive", str(archive_source), "-o", str(server.repository / "m-2.zip")),
                   check=True, capture_output=True, timeout=60)

    with server.management() as manage, Load(server) as load:
        load.settle()
        # 1. a new version from an archive, over the management API: 1 and 2 serve, 2 is the default
        assert manage.post("/models", params={"url": "m-2.zip"}).status_code == 200
        assert serving(manage) == ["1", "2"]
        load.settle()
        # 2. a new version on disk, loaded through the repository extension: 2 and 3 serve, 1 drains
        add_version_on_disk(model, 3)
        assert httpx.post(f"{server.base_url}/v2/repository/models/m/load", timeout=30,
                          headers={"Authorization": f"Bearer {server.token}"}).status_code == 200
        assert serving(manage) == ["2", "3"]
        load.settle()
        # 3. a new version on disk, found by polling: 3 and 4 serve
        add_version_on_disk(model, 4)
        wait_until(lambda: serving(manage) == ["3", "4"], what="the poll to load version 4")
        load.settle()
        # 4. a sticky 50/50 split, then a default version, then more instances
        split = manage.put("/models/m/traffic", json={"3": 50, "4": 50})
        assert split.status_code == 200, split.text
        with httpx.Client(timeout=10) as client:
            for key in ("alice", "bob", "carol"):
                answers = {server.infer(client, "m", {"routing_key": key}).json()["outputs"][0]["data"][0]
                           for _ in range(5)}
                assert len(answers) == 1 and answers <= {3, 4}, (key, answers)
        load.settle()
        assert manage.put("/models/m/3/set-default").status_code == 200
        load.settle()
        assert manage.put("/models/m", params={"min_worker": 2, "synchronous": "true"}).status_code == 200
        assert {row["minWorkers"] for row in manage.get("/models/m").json()} == {2}
        load.settle()
        # 5. nothing changed: a reload loads nothing
        before = len(loads(tmp_path))
        assert httpx.post(f"{server.base_url}/v2/repository/models/m/load", timeout=30,
                          headers={"Authorization": f"Bearer {server.token}"}).status_code == 200
        # A poll has compared every model's files once the new model it finds is served: then nothing
        # reloaded means that no poll saw "m" as changed.
        write_versioned_model(server.repository / ".staged-sentinel", (1,))
        (server.repository / ".staged-sentinel").rename(server.repository / "sentinel")
        wait_until(lambda: httpx.get(f"{server.base_url}/v2/models/sentinel/ready", timeout=10).status_code == 200,
                   timeout_s=30, what="a poll to serve the sentinel model")
        assert len(loads(tmp_path)) == before
        # 6. unregister version 4: version 2 (still on disk) loads while 3 and 4 serve, then 4 drains (its
        #    folder stays: servekit deletes only what it unpacked; it is not loaded again until restart)
        assert manage.delete("/models/m/4").status_code == 200
        assert serving(manage) == ["2", "3"]
        load.settle()

    assert load.failures == [], load.failures[:5]
    assert set(load.versions) == {1, 2, 3, 4}, load.versions
    assert load.seen() > 200
    assert (model / "4").is_dir()  # written by hand, not by a registration: unregistered, left on disk
    assert (model / "2" / ".servekit-registered").is_file()  # what m-2.zip's registration unpacked
    # one instance per load, then two per version after scaling (3 and 4, and version 2's comeback)
    assert Counter(loads(tmp_path)) == Counter({1: 1, 2: 1 + 2, 3: 1 + 2, 4: 1 + 2})
