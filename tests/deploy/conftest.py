"""Paths of the deployment files, shared by the tests of deploy/."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


@pytest.fixture(scope="session")
def deploy_dir() -> Path:
    return DEPLOY
