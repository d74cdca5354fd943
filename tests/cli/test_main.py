"""``servekit serve`` and ``servekit demo``: argument handling that answers before any server starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from servekit import __version__
from servekit.cli.main import main


def test_version_and_the_commands_are_listed() -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["--version"]).output.strip() == f"servekit, version {__version__}"
    listed = runner.invoke(main, ["--help"]).output
    for command in ("serve", "demo", "archive", "convert", "bench", "advise", "ray"):
        assert f"  {command}" in listed


def test_serve_refuses_a_repository_that_is_not_a_folder(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["serve", str(tmp_path / "absent")])
    assert result.exit_code == 2
    assert f"model repository {tmp_path / 'absent'} is not a folder (try: servekit demo)" in result.output


def test_serve_refuses_the_management_api_with_several_workers(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["serve", str(tmp_path), "--workers", "2", "--management-port", "9003"])
    assert result.exit_code == 2
    assert "the management API needs --workers 1" in result.output


def test_serve_refuses_a_bad_setting_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVEKIT_CACHE_URL", "ftp://cache")
    result = CliRunner().invoke(main, ["serve", str(tmp_path)])
    assert result.exit_code == 2
    assert "cache URL 'ftp://cache'" in result.output


def test_demo_writes_a_repository_serve_can_read(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["demo", str(tmp_path / "models"), "--no-torch"])
    assert result.exit_code == 0, result.output
    written = sorted(path.name for path in (tmp_path / "models").iterdir() if path.is_dir())
    assert written and f"wrote {len(written)} demo models" in result.output
    assert f"serve them with: servekit serve {tmp_path / 'models'}" in result.output
