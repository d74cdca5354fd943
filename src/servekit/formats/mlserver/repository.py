"""Reading an MLServer model folder's model-settings.json from disk (the I/O beside the pure mapping).

``read_mlserver_config`` is what servekit's repository calls for a folder holding
model-settings.json: it reads the file, finds the model file ``parameters.uri`` names (as
MLServer does: relative to the settings file's folder; a folder is searched for MLServer's
well-known names), and maps both with ``servekit.formats.mlserver.settings``. Only files inside
the model folder are served.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from servekit.config import ModelConfig
from servekit.errors import ConfigError
from servekit.formats.mlserver.settings import WELL_KNOWN_FILES, parse_settings, to_model_config

__all__ = ["SETTINGS_FILE", "read_mlserver_config"]

SETTINGS_FILE = "model-settings.json"


def read_mlserver_config(model_dir: Path) -> ModelConfig:
    """servekit's ModelConfig for an MLServer model folder (see the module docstring)."""
    path = model_dir / SETTINGS_FILE
    source = str(path)
    settings = parse_settings(path.read_text(encoding="utf-8"), source)
    version_folder, model_file = _locate(model_dir, settings.uri, WELL_KNOWN_FILES[settings.runtime], source)
    return to_model_config(settings, source, model_dir.name, version_folder, model_file)


def _locate(model_dir: Path, uri: str | None, well_known: tuple[str, ...], source: str) -> tuple[str, str]:
    """(folder relative to ``model_dir``, file name) of the model file ``uri`` names."""
    if uri is not None and "://" in uri and not uri.startswith("file://"):
        raise ConfigError(f"{source}: parameters.uri {uri!r}: servekit reads models from the repository's disk; "
                          "copy the file into the model folder and name it there")
    target = model_dir / (uri.removeprefix("file://") if uri else ".")
    try:
        relative = target.resolve().relative_to(model_dir.resolve())
    except ValueError:
        raise ConfigError(f"{source}: parameters.uri {uri!r} is outside the model folder; servekit serves only "
                          "the model folder's own files (move the file into it)") from None
    if target.is_file():
        return PurePosixPath(relative.parent).as_posix() or ".", target.name
    if target.is_dir():
        for name in well_known:
            if (target / name).is_file():
                return PurePosixPath(relative).as_posix() or ".", name
        raise ConfigError(f"{source}: parameters.uri: no model file in {target} (looked for {', '.join(well_known)})")
    raise ConfigError(f"{source}: parameters.uri {uri!r}: no such file or folder")
