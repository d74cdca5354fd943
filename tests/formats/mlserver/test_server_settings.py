"""MLServer's settings.json mapped onto servekit's server settings (pure), and read by the CLI: flags and
SERVEKIT_* variables win, skipped keys are named once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from servekit.cli.main import main
from servekit.errors import ConfigError
from servekit.formats.mlserver.server_settings import map_server_settings, read_server_settings

PATH = Path("/models/settings.json")


def test_the_keys_that_map_become_server_settings() -> None:
    read = map_server_settings({"host": "127.0.0.1", "http_port": 9080, "grpc_port": 9081, "metrics_port": 9082,
                                "grpc_max_message_length": 1048576, "parallel_workers": 3, "debug": True,
                                "use_structured_logging": True, "load_models_at_startup": False,
                                "model_repository_root": "."}, PATH)
    assert read.fields == {"host": "127.0.0.1", "http_port": 9080, "grpc_port": 9081, "metrics_port": 9082,
                           "grpc_max_message_bytes": 1048576, "workers": 3, "log_level": "debug",
                           "log_format": "json", "load_models": []}
    assert read.skipped == [] and read.notes == []


def test_in_process_inference_is_one_worker_and_the_others_are_skipped_by_name() -> None:
    read = map_server_settings({"parallel_workers": 0, "debug": False, "load_models_at_startup": True,
                                "server_name": "mine", "kafka_enabled": False, "cors_settings": {}}, PATH)
    assert read.fields == {"workers": 1, "log_level": "info"}
    assert read.skipped == ["cors_settings", "kafka_enabled", "server_name"]


def test_another_repository_root_is_reported_not_followed() -> None:
    read = map_server_settings({"model_repository_root": "/srv/other"}, PATH)
    assert read.fields == {}
    assert read.notes == ["model_repository_root '/srv/other' is not followed: the repository is /models, the "
                          "folder holding settings.json (as `mlserver start FOLDER` serves FOLDER)"]


@pytest.mark.parametrize(("text", "said"), [
    ("[1]", "expected a JSON object"),
    ("{", "not readable JSON"),
    ('{"debug": "yes"}', "debug: expected true or false, got 'yes'"),
])
def test_a_file_servekit_cannot_read_is_refused(tmp_path: Path, text: str, said: str) -> None:
    (tmp_path / "settings.json").write_text(text)
    with pytest.raises(ConfigError, match=said):
        read_server_settings(tmp_path)
    assert read_server_settings(tmp_path / "absent") is None


def _config(tmp_path: Path, settings: dict[str, Any], *args: str, env: dict[str, str] | None = None) -> Any:
    (tmp_path / "settings.json").write_text(json.dumps(settings))
    return CliRunner().invoke(main, ["config", str(tmp_path), *args], env=env)


def test_servekit_config_shows_the_files_settings_under_flags_and_variables(tmp_path: Path) -> None:
    result = _config(tmp_path, {"http_port": 9180, "grpc_port": 9181, "metrics_port": 9182, "server_name": "x",
                                "tracing_server": "otel:4317"}, "--grpc-port", "7001",
                     env={"SERVEKIT_METRICS_PORT": "7002"})
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    assert lines["http_port"].split()[1:] == ["9180", f"({tmp_path / 'settings.json'})"]
    assert lines["grpc_port"].split()[1:] == ["7001", "(--grpc-port)"]
    assert lines["metrics_port"].split()[1:] == ["7002", "(env", "SERVEKIT_METRICS_PORT)"]
    assert result.stderr.count("skipped MLServer settings servekit does not read: server_name, tracing_server") == 1


def test_a_bad_value_in_the_file_names_the_file(tmp_path: Path) -> None:
    result = _config(tmp_path, {"http_port": "eighty"})
    assert result.exit_code == 2
    assert f"{tmp_path / 'settings.json'}: http_port='eighty'" in result.stderr
