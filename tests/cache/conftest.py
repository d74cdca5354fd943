from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .redis_process import RedisProcess


@pytest.fixture()
def redis_server(tmp_path: Path) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()
