"""MLServer's server-wide ``settings.json`` at a repository's root, mapped onto ServerSettings fields.

``mlserver start FOLDER`` reads ``FOLDER/settings.json``; ``servekit serve FOLDER`` reads the same
file, and flags and SERVEKIT_* variables win over it (``servekit.cli.main`` applies it). What maps:

- ``host``, ``http_port``, ``grpc_port``, ``metrics_port``: the same settings;
- ``grpc_max_message_length`` -> ``grpc_max_message_bytes``;
- ``parallel_workers`` -> ``workers`` (processes that each hold every model; 0, MLServer's
  in-process inference, is one);
- ``debug`` -> ``log_level`` ``debug`` (true) or ``info`` (false);
- ``use_structured_logging`` -> ``log_format`` ``json`` (true) or ``text``;
- ``load_models_at_startup: false`` -> no model loads at start (``load_models: []``);
- ``model_repository_root``: as with ``mlserver start FOLDER``, the repository is the folder
  holding settings.json; a root naming another folder is reported and not followed.

Every other key (``server_name``, ``cors_settings``, ``kafka_*``, ``tracing_server``, ``cache_*``,
``metrics_endpoint``, ``root_path``, ...) is named in one warning and skipped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from servekit.errors import ConfigError

__all__ = ["SERVER_SETTINGS_FILE", "ServerSettingsFile", "map_server_settings", "read_server_settings"]

SERVER_SETTINGS_FILE: Final = "settings.json"
_SAME: Final = ("host", "http_port", "grpc_port", "metrics_port")


@dataclass(frozen=True, slots=True)
class ServerSettingsFile:
    """What a settings.json says for servekit: ServerSettings fields, and what it could not map."""

    path: Path
    fields: dict[str, Any] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # keys servekit does not read
    notes: list[str] = field(default_factory=list)  # keys read but not followed, with why


def map_server_settings(raw: dict[str, Any], path: Path) -> ServerSettingsFile:
    """The ServerSettings fields ``raw`` (settings.json's object, found at ``path``) maps to (pure)."""
    fields: dict[str, Any] = {key: raw[key] for key in _SAME if key in raw}
    if "grpc_max_message_length" in raw and raw["grpc_max_message_length"] is not None:
        fields["grpc_max_message_bytes"] = raw["grpc_max_message_length"]
    if "parallel_workers" in raw:
        workers = raw["parallel_workers"]
        fields["workers"] = max(workers, 1) if isinstance(workers, int) and not isinstance(workers, bool) else workers
    if "debug" in raw:
        fields["log_level"] = "debug" if _flag(raw, "debug", path) else "info"
    if "use_structured_logging" in raw:
        fields["log_format"] = "json" if _flag(raw, "use_structured_logging", path) else "text"
    if "load_models_at_startup" in raw and not _flag(raw, "load_models_at_startup", path):
        fields["load_models"] = []
    notes = []
    root = raw.get("model_repository_root")
    if root is not None and (path.parent / str(root)).resolve() != path.parent.resolve():
        notes.append(f"model_repository_root {root!r} is not followed: the repository is {path.parent}, the "
                     "folder holding settings.json (as `mlserver start FOLDER` serves FOLDER)")
    mapped = {*_SAME, "grpc_max_message_length", "parallel_workers", "debug", "use_structured_logging",
              "load_models_at_startup", "model_repository_root"}
    return ServerSettingsFile(path, fields, sorted(set(raw) - mapped), notes)


def read_server_settings(repository: Path) -> ServerSettingsFile | None:
    """``repository``'s settings.json mapped, or None when it has none; ConfigError when it is not JSON."""
    path = repository / SERVER_SETTINGS_FILE
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not readable JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return map_server_settings(raw, path)


def _flag(raw: dict[str, Any], key: str, path: Path) -> bool:
    value = raw[key]
    if not isinstance(value, bool):
        raise ConfigError(f"{path}: {key}: expected true or false, got {value!r}")
    return value
