"""``servekit serve`` and ``servekit demo``: argument handling that answers before any server starts."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import click
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


def test_serve_takes_tritons_metrics_config_and_refuses_what_it_cannot_serve(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings, output = _served_settings(monkeypatch, [str(tmp_path), "--triton-metrics", "--triton-metrics-config",
                                                      "summary_latencies=true", "--triton-metrics-config",
                                                      "summary_quantiles=0.5:0.05,0.99:0.001"])
    assert settings is not None, output
    assert settings.triton_summaries.quantiles == ((0.5, 0.05), (0.99, 0.001))  # type: ignore[attr-defined]
    monkeypatch.setenv("SERVEKIT_TRITON_METRICS_CONFIG", "summary_latencies=true,summary_quantiles=0.9:0.01,0.5:0.05")
    settings, output = _served_settings(monkeypatch, [str(tmp_path), "--triton-metrics"])
    assert settings is not None, output
    assert settings.triton_summaries.quantiles == ((0.5, 0.05), (0.9, 0.01))  # type: ignore[attr-defined]
    monkeypatch.delenv("SERVEKIT_TRITON_METRICS_CONFIG")
    for args, message in (
            (["--triton-metrics-config", "summary_latencies=true"], "--triton-metrics-config "
             "(SERVEKIT_TRITON_METRICS_CONFIG) needs --triton-metrics"),
            (["--triton-metrics", "--triton-metrics-config", "summary_latency=true"],
             "'summary_latency': unknown key")):
        result = CliRunner().invoke(main, ["serve", str(tmp_path), *args])
        assert result.exit_code == 2, result.output
        assert message in " ".join(result.output.split()), result.output


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


def test_every_serve_flag_names_its_environment_variable_and_that_variable_is_read() -> None:
    from servekit.cli.main import serve
    from servekit.config import ServerSettings, environment_variable

    command_line_only = {"name", "max_batch_size", "inputs", "outputs"}
    options = [p for p in serve.params if isinstance(p, click.Option) and p.name not in command_line_only]
    assert len(options) > 25
    for option in options:
        assert option.name in ServerSettings.model_fields, option.name
        variable = environment_variable(option.name)
        assert f"[env {variable}" in (option.help or ""), option.name
        # The variable is named after the flag: --allowed-url reads SERVEKIT_ALLOWED_URL.
        flag = option.opts[0].removeprefix("--")
        assert variable == "SERVEKIT_" + flag.upper().replace("-", "_"), (flag, variable)
    for option in [p for p in serve.params if p.name in command_line_only]:
        assert "command line only" in (option.help or ""), option.name
    shown = CliRunner().invoke(main, ["serve", "--help"], terminal_width=200).output
    assert "SERVEKIT_ALLOWED_URL]" in shown.replace("\n", " ") or "SERVEKIT_ALLOWED_URL" in shown


def _config(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {key: value for key, value in os.environ.items() if not key.startswith("SERVEKIT_")}
    return subprocess.run([sys.executable, "-m", "servekit", "config", *args], capture_output=True, text=True,
                          env={**clean, **env}, timeout=120)


def _lines(output: str) -> dict[str, tuple[str, str]]:
    rows = {}
    for line in output.splitlines():
        name, value, origin = re.fullmatch(r"(\S+)\s+(.*?)  \((.*)\)", line).groups()  # type: ignore[union-attr]
        rows[name] = (value, origin)
    return rows


def test_config_prints_each_setting_and_where_it_came_from(tmp_path: Path) -> None:
    done = _config([str(tmp_path), "--http-port", "9100", "--allowed-url", "https://a.example/x/,https://c.example/",
                    "--allowed-url", "file:///srv/"],
                   {"SERVEKIT_GRPC_PORT": "9101", "SERVEKIT_ALLOWED_URL": "https://ignored.example/",
                    "SERVEKIT_MANAGEMENT_TOKEN": "s3cret", "SERVEKIT_READ_TIMEOUT": "5"})
    assert done.returncode == 0, done.stderr
    rows = _lines(done.stdout)
    assert rows["repository"] == (str(tmp_path), "argument")
    assert rows["http_port"] == ("9100", "--http-port")
    assert rows["grpc_port"] == ("9101", "env SERVEKIT_GRPC_PORT")
    # The flag wins over the variable; repeatable, each comma-separated.
    assert rows["allowed_urls"] == ("https://a.example/x/,https://c.example/,file:///srv/", "--allowed-url")
    assert rows["read_timeout_s"] == ("5.0", "env SERVEKIT_READ_TIMEOUT")
    assert rows["metrics_port"] == ("8002", "default")
    assert rows["management_auth"] == ("True", "default")
    # A flag not typed is not given (a boolean flag included): the variable, then the default, decide.
    untouched = _lines(_config([], {}).stdout)
    assert {origin for _, origin in untouched.values()} == {"default"}
    assert rows["management_token"] == ("(hidden)", "env SERVEKIT_MANAGEMENT_TOKEN")
    assert "s3cret" not in done.stdout and done.stderr == ""


def test_allowed_url_reads_a_comma_separated_variable_and_the_old_name_with_a_warning(tmp_path: Path) -> None:
    done = _config([str(tmp_path)], {"SERVEKIT_ALLOWED_URL": "https://a.example/x/, file:///srv/models/"})
    assert done.returncode == 0, done.stderr
    assert _lines(done.stdout)["allowed_urls"] == ("https://a.example/x/,file:///srv/models/",
                                                   "env SERVEKIT_ALLOWED_URL")
    old = _config([str(tmp_path)], {"SERVEKIT_ALLOWED_URLS": '["https://b.example/"]'})
    assert old.returncode == 0, old.stderr
    assert _lines(old.stdout)["allowed_urls"] == ("https://b.example/", "env SERVEKIT_ALLOWED_URLS")
    assert "SERVEKIT_ALLOWED_URLS is the old name of SERVEKIT_ALLOWED_URL" in old.stderr
    both = _config([str(tmp_path)], {"SERVEKIT_ALLOWED_URLS": "https://b.example/",
                                     "SERVEKIT_ALLOWED_URL": "https://a.example/"})
    assert _lines(both.stdout)["allowed_urls"] == ("https://a.example/", "env SERVEKIT_ALLOWED_URL")
    assert "SERVEKIT_ALLOWED_URLS is ignored" in both.stderr


@pytest.mark.parametrize(("args", "env", "message"), [
    ([], {"SERVEKIT_HTTP_PORT": "eighty"}, "SERVEKIT_HTTP_PORT='eighty': Input should be a valid integer"),
    ([], {"SERVEKIT_WORKERS": "0"}, "SERVEKIT_WORKERS='0': Input should be greater than or equal to 1"),
    ([], {"SERVEKIT_DRAIN_TIMEOUT_S": "-1"}, "SERVEKIT_DRAIN_TIMEOUT_S='-1': Input should be greater than"),
    (["--grpc-port", "70000"], {}, "--grpc-port=70000: Input should be less than or equal to 65535"),
])
def test_a_bad_value_is_one_line_naming_its_variable_or_flag(tmp_path: Path, args: list[str], env: dict[str, str],
                                                             message: str) -> None:
    for command in ("config", "serve"):
        clean = {key: value for key, value in os.environ.items() if not key.startswith("SERVEKIT_")}
        done = subprocess.run([sys.executable, "-m", "servekit", command, str(tmp_path), *args], capture_output=True,
                              text=True, env={**clean, **env}, timeout=120)
        assert done.returncode == 2, done.stderr
        error = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
        assert len(error) == 1 and message in error[0], done.stderr
        assert "validation error" not in done.stderr and "Traceback" not in done.stderr


def test_without_the_grpc_extra_grpc_is_off_unless_asked_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("servekit.grpc.available.grpc_installed", lambda: False)
    settings, output = _served_settings(monkeypatch, [str(tmp_path)])
    assert settings is not None and settings.grpc_port == 0, output  # type: ignore[attr-defined]
    assert "servekit: no gRPC: pip install 'servekit[grpc]' to serve it on port 8001" in output
    settings, output = _served_settings(monkeypatch, [str(tmp_path), "--grpc-port", "0"])
    assert settings is not None and "no gRPC" not in output
    for args, named in ((["--grpc-port", "9001"], "--grpc-port=9001"), ([], "SERVEKIT_GRPC_PORT=9001")):
        if not args:
            monkeypatch.setenv("SERVEKIT_GRPC_PORT", "9001")
        settings, output = _served_settings(monkeypatch, [str(tmp_path), *args])
        assert settings is None
        assert f"{named}: serving gRPC needs the grpc extra: pip install 'servekit[grpc]' (or 0: no gRPC)" in output
