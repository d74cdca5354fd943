from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from servekit.config import ServerSettings
from servekit.http import create_app
from tests.builders import write_repository


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    root: Path = tmp_path_factory.mktemp("repo")
    write_repository(root, {"m": "max_batch_size: 4\n", "broken": "instances: many\n"})
    # repository_control open: the routes of the repository extension are tested here, their gate in
    # tests/serving/test_control.py and over real sockets in tests/e2e/test_repository_control.py.
    settings = ServerSettings(repository=root, default_model="m", max_request_bytes=4096, repository_control="open")
    with TestClient(create_app(settings)) as test_client:
        yield test_client
