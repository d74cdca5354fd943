"""Fixtures shared across test folders, and the one policy for what a test needs but may not find.

The policy (``require_module``, ``require_executable``, ``missing``): a tool, service binary or
Python extra the test suite depends on is *required* under CI (``CI=true``, which ``.ci/run`` sets):
its absence fails the test there, because ``scripts/install test`` installs everything. Outside CI
the test is skipped, and the reason names the command that installs what is missing.
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, NoReturn

import pytest

if TYPE_CHECKING:
    from tests.cache.redis_process import RedisProcess

__all__ = ["TORCH_INSTALL", "missing", "require_executable", "require_module", "under_ci"]

INSTALL_ALL = "scripts/install test"
# The CPU build, pinned: an unpinned torch pulls a multi-GB CUDA build.
TORCH_INSTALL = "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"


def under_ci() -> bool:
    """True when ``CI`` is set to a true value (``.ci/run`` sets ``CI=true``; so do CI services)."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes", "on"}


def missing(what: str, install: str) -> NoReturn:
    """Fail (under CI) or skip (locally) a test that needs ``what``; ``install`` is the command that installs it."""
    reason = f"{what} is missing: install it with `{install}` (or `{INSTALL_ALL}`)"
    if under_ci():
        pytest.fail(f"{reason}; under CI a missing tool fails the test", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def require_module(name: str, install: str) -> ModuleType:
    """``import name``, or fail/skip by the policy above (module level too: it may run at collection)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        missing(f"the Python module {name!r}", install)


def require_executable(name: str, install: str) -> str:
    """The path of executable ``name``, looked up beside this Python first (the venv's bin), then on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        missing(f"the executable {name!r}", install)
    return found


def pytest_configure(config: pytest.Config) -> None:
    # Every server a test starts makes its own metrics folder: one inherited from outside would be shared
    # (and emptied at each start) by servers running side by side under xdist.
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)


@pytest.fixture()
def redis_server(tmp_path: Path) -> Iterator[RedisProcess]:
    """A real redis-server on a free loopback port, stopped by PID after the test."""
    from tests.cache.redis_process import RedisProcess  # it uses this module's helpers

    server = RedisProcess(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()
