"""One model of the repository: its folder, config, versions and state, and the model folder rules.

Pure data and small blocking helpers; the Registry owns every change to a ModelEntry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from servekit.config import ModelConfig, parse_model_config
from servekit.errors import ConfigError
from servekit.formats.mlserver import SETTINGS_FILE as MLSERVER_SETTINGS_FILE
from servekit.formats.mlserver import read_mlserver_config
from servekit.formats.triton.repository import CONFIG_FILE as TRITON_CONFIG_FILE
from servekit.formats.triton.repository import read_triton_config
from servekit.serving.version import LoadState, ModelVersion
from servekit.types import is_decimal

__all__ = ["ModelEntry", "Overrides", "model_folders", "read_model_config", "scan_versions", "valid_model_name"]


@dataclass(slots=True)
class Overrides:
    """Changes made over the management API. They win over config.yaml until the server restarts."""

    instances: int | None = None
    default_version: int | None = None
    traffic: dict[int, int] | None = None  # {} = no split, whatever config.yaml says
    # Versions unregistered whose folders stay on disk (the user's, not servekit's): not loaded again.
    hidden_versions: set[int] = field(default_factory=set)

    def apply(self, config: ModelConfig) -> ModelConfig:
        update: dict[str, object] = {}
        if self.instances is not None:
            update["instances"] = self.instances
        if self.default_version is not None:
            update["default_version"] = self.default_version
        if self.traffic is not None:
            update["traffic"] = self.traffic or None
        return config.model_copy(update=update) if update else config


@dataclass(eq=False, slots=True)
class ModelEntry:
    name: str
    path: Path
    config: ModelConfig | None = None  # config.yaml with the overrides applied
    versions: dict[int, ModelVersion] = field(default_factory=dict)
    failed_versions: dict[int, str] = field(default_factory=dict)
    stale: dict[int, str] = field(default_factory=dict)  # serving older files: why the reload failed
    state: LoadState = LoadState.UNAVAILABLE
    reason: str = "not loaded"
    source: str = ""  # where the model came from: its folder, or the archive it was registered from
    overrides: Overrides = field(default_factory=Overrides)

    def version_number(self, text: str) -> int | None:
        """The version ``text`` names: a loaded version's label (TorchServe's "1.0"), else a
        version number the model has (loaded or failed); None when it names none."""
        for number, loaded in self.versions.items():
            if loaded.label == text:
                return number
        if is_decimal(text) and (int(text) in self.versions or int(text) in self.failed_versions):
            return int(text)
        return None

    def ready_versions(self) -> dict[int, ModelVersion]:
        return {v: mv for v, mv in self.versions.items() if mv.state is LoadState.READY}

    def default_version(self) -> ModelVersion | None:
        if len(self.versions) == 1:  # the usual model: asked once per request, so no dict for it
            (only,) = self.versions.values()
            return only if only.state is LoadState.READY else None
        ready = self.ready_versions()
        if not ready:
            return None
        wanted = self.config.default_version if self.config else None
        if wanted is not None and wanted in ready:
            return ready[wanted]
        return ready[max(ready)]


def scan_versions(model_dir: Path) -> list[int]:
    """Numbered version folders inside a model folder."""
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and is_decimal(p.name))


def valid_model_name(name: str) -> bool:
    """A name that is one plain folder name: no separators, not hidden, not '.' or '..'."""
    return bool(name) and "/" not in name and "\\" not in name and "\0" not in name and not name.startswith((".", "_"))


def model_folders(*roots: Path) -> dict[str, Path]:
    """The model folders under ``roots`` by name, sorted (a name found in several: the first root's)."""
    found: dict[str, Path] = {}
    for root in roots:
        if root.is_dir():
            for path in sorted(root.iterdir()):
                if path.is_dir() and valid_model_name(path.name):
                    found.setdefault(path.name, path)
    return dict(sorted(found.items()))


def read_model_config(model_dir: Path) -> ModelConfig:
    """The folder's config.yaml, or Triton's config.pbtxt (read at servekit.formats.triton's edge),
    or MLServer's model-settings.json (at servekit.formats.mlserver's), or the defaults when it has
    none; more than one is a ConfigError."""
    path = model_dir / "config.yaml"
    present = [name for name in ("config.yaml", TRITON_CONFIG_FILE, MLSERVER_SETTINGS_FILE)
               if (model_dir / name).exists()]
    if len(present) > 1:
        raise ConfigError(f"{model_dir}: has {' and '.join(present)}: servekit reads one config per model "
                          "(config.yaml: servekit's, config.pbtxt: Triton's, model-settings.json: MLServer's); "
                          "keep one")
    if present == [TRITON_CONFIG_FILE]:
        return read_triton_config(model_dir)
    if present == [MLSERVER_SETTINGS_FILE]:
        return read_mlserver_config(model_dir)
    if not path.exists():
        return ModelConfig()
    return parse_model_config(path.read_text(encoding="utf-8"), path)
