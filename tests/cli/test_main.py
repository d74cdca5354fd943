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


def _served_settings(monkeypatch: pytest.MonkeyPatch, args: list[str]) -> tuple[object, str]:
    """The settings ``servekit serve ARGS`` would serve with (the server itself is not started)."""
    seen: list[object] = []
    monkeypatch.setattr("servekit.server.serve", seen.append)
    result = CliRunner().invoke(main, ["serve", *args])
    return (seen[0] if seen else None), result.output


def test_model_store_and_models_alone_serve_as_torchserve_does(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("a.mar", "b.mar", "c.mar"):
        (tmp_path / name).write_bytes(b"")
    settings, output = _served_settings(monkeypatch, ["--model-store", str(tmp_path), "--models", "m1=a.mar,b.mar",
                                                      "--models", "c.mar"])
    assert settings is not None, output
    # The repository is then the store, whose folders do not load at start: only the archives.
    assert (settings.repository, settings.store, settings.load_models) == (tmp_path, tmp_path, [])  # type: ignore[attr-defined]
    assert settings.models == ["m1=a.mar", "b.mar", "c.mar"]  # type: ignore[attr-defined]

    monkeypatch.setenv("SERVEKIT_MODELS", "all")
    settings, output = _served_settings(monkeypatch, ["--model-store", str(tmp_path)])
    assert settings is not None and settings.models == ["all"], output  # type: ignore[attr-defined]
    monkeypatch.delenv("SERVEKIT_MODELS")

    repository = tmp_path / "repo"
    repository.mkdir()
    settings, output = _served_settings(monkeypatch, [str(repository), "--model-store", str(tmp_path),
                                                      "--models", "a.mar"])
    assert settings is not None, output  # with a REPOSITORY: its models load too
    assert (settings.repository, settings.load_models) == (repository, None)  # type: ignore[attr-defined]


def test_models_naming_a_missing_archive_or_malformed_is_refused(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    settings, output = _served_settings(monkeypatch, ["--model-store", str(tmp_path), "--models", "x=absent.mar"])
    assert settings is None and f"--models: no archive absent.mar in the model store {tmp_path}" in output
    settings, output = _served_settings(monkeypatch, ["--model-store", str(tmp_path), "--models", "=a.mar"])
    assert settings is None and "expected NAME=ARCHIVE, ARCHIVE or all" in output
    settings, output = _served_settings(monkeypatch, ["--model-store", str(tmp_path / "none"), "--models", "all"])
    assert settings is None and "is not a folder" in output
