"""The model registry: which models and versions exist, their state, and resolution.

The repository folder is read here (the only I/O of this package, always in a worker
thread); the event loop only swaps finished ModelVersion objects in and out, so a
version that is loading never blocks one that is serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from servekit.config import ModelConfig, parse_model_config
from servekit.errors import ConfigError, ModelNotFound, ModelNotReady, ServekitError
from servekit.repository.version import LoadState, ModelVersion, load_version

__all__ = ["ModelEntry", "Registry", "scan_versions"]

log = logging.getLogger("servekit.repository")


@dataclass(eq=False, slots=True)
class ModelEntry:
    name: str
    path: Path
    config: ModelConfig | None = None
    versions: dict[int, ModelVersion] = field(default_factory=dict)
    failed_versions: dict[int, str] = field(default_factory=dict)
    state: LoadState = LoadState.UNAVAILABLE
    reason: str = "not loaded"

    def default_version(self) -> ModelVersion | None:
        ready = {v: mv for v, mv in self.versions.items() if mv.state is LoadState.READY}
        if not ready:
            return None
        wanted = self.config.default_version if self.config else None
        if wanted is not None and wanted in ready:
            return ready[wanted]
        return ready[max(ready)]


def scan_versions(model_dir: Path) -> list[int]:
    """Numbered version folders inside a model folder."""
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def _read_config(model_dir: Path) -> ModelConfig:
    path = model_dir / "config.yaml"
    if not path.exists():
        return ModelConfig()
    return parse_model_config(path.read_text(encoding="utf-8"), path)


def _load_model(entry: ModelEntry) -> tuple[ModelConfig, dict[int, ModelVersion], dict[int, str]]:
    """Read config and load every selected version (blocking). Failures are kept per version."""
    config = _read_config(entry.path)
    selected = config.version_policy.select(scan_versions(entry.path))
    if not selected:
        raise ServekitError(f"{entry.path}: no numbered version folders to load (e.g. {entry.path}/1/)")
    loaded: dict[int, ModelVersion] = {}
    failed: dict[int, str] = {}
    for version in selected:
        try:
            loaded[version] = load_version(entry.name, entry.path, version, config)
        except Exception as exc:  # one bad version must not stop the others
            message = exc.message if isinstance(exc, ServekitError) else f"{type(exc).__name__}: {exc}"
            log.error("model %s version %d failed to load: %s", entry.name, version, message)
            failed[version] = message
    return config, loaded, failed


class Registry:
    """Every model of one repository folder, by name."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._models: dict[str, ModelEntry] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def model_names(self) -> list[str]:
        return sorted(self._models)

    def discover(self) -> list[str]:
        """Names of model folders on disk (without loading them)."""
        if not self.root.is_dir():
            raise ServekitError(f"model repository {self.root} does not exist or is not a folder")
        names = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
        for name in names:
            self._models.setdefault(name, ModelEntry(name, self.root / name))
        return names

    def entry(self, name: str) -> ModelEntry:
        try:
            return self._models[name]
        except KeyError:
            raise ModelNotFound(f"unknown model {name!r}") from None

    def resolve(self, name: str, version: str | None = None) -> ModelVersion:
        """The version that serves a request; 404 when absent, 503 when not ready."""
        entry = self.entry(name)
        if version in (None, ""):
            chosen = entry.default_version()
            if chosen is None:
                raise ModelNotReady(f"model {name!r} is not ready: {entry.reason}")
            return chosen
        assert version is not None
        number = int(version) if version.isdigit() else None
        if number is None or (number not in entry.versions and number not in entry.failed_versions):
            raise ModelNotFound(f"model {name!r} has no version {version!r}")
        if number in entry.failed_versions:
            raise ModelNotReady(f"model {name!r} version {number} is not ready: {entry.failed_versions[number]}")
        chosen = entry.versions[number]
        if chosen.state is not LoadState.READY:
            raise ModelNotReady(f"model {name!r} version {number} is {chosen.state.value.lower()}")
        return chosen

    def index(self) -> list[dict[str, str]]:
        """One row per model version (or per model when it has none), for the repository index."""
        rows: list[dict[str, str]] = []
        for name in sorted(self._models):
            entry = self._models[name]
            versions = sorted(set(entry.versions) | set(entry.failed_versions))
            if not versions:
                rows.append({"name": name, "state": entry.state.value, "reason": entry.reason})
            for v in versions:
                if v in entry.versions:
                    rows.append({"name": name, "version": str(v), "state": entry.versions[v].state.value,
                                 "reason": ""})
                else:
                    rows.append({"name": name, "version": str(v), "state": LoadState.UNAVAILABLE.value,
                                 "reason": entry.failed_versions[v]})
        return rows

    async def load(self, name: str) -> ModelEntry:
        """(Re)load a model from disk. New versions load while old ones keep serving."""
        if name not in self._models:
            path = self.root / name
            if not path.is_dir():
                raise ModelNotFound(f"no model folder {name!r} in the repository {self.root}")
            self._models[name] = ModelEntry(name, path)
        entry = self._models[name]
        async with self._locks.setdefault(name, asyncio.Lock()):
            if not entry.versions:
                entry.state, entry.reason = LoadState.LOADING, "loading"
            try:
                config, loaded, failed = await asyncio.to_thread(_load_model, entry)
            except Exception as exc:
                message = exc.message if isinstance(exc, ServekitError) else f"{type(exc).__name__}: {exc}"
                log.error("model %s failed to load: %s", name, message)
                if not entry.versions:
                    entry.state, entry.reason = LoadState.UNAVAILABLE, message
                if isinstance(exc, ConfigError):
                    raise ConfigError(f"model {name!r} failed to load: {message}") from None
                raise ModelNotReady(f"model {name!r} failed to load: {message}") from None
            old = entry.versions
            entry.config, entry.versions, entry.failed_versions = config, loaded, failed
            if loaded:
                entry.state, entry.reason = LoadState.READY, ""
            else:
                entry.state = LoadState.UNAVAILABLE
                entry.reason = "; ".join(f"version {v}: {why}" for v, why in failed.items())
            await _retire(old.values())
            if not loaded:
                raise ModelNotReady(f"model {name!r} failed to load: {entry.reason}")
            return entry

    async def unload(self, name: str) -> None:
        """Stop serving a model: new requests get 503, in-flight ones finish."""
        entry = self.entry(name)
        async with self._locks.setdefault(name, asyncio.Lock()):
            old = entry.versions
            entry.versions, entry.failed_versions = {}, {}
            entry.state, entry.reason = LoadState.UNAVAILABLE, "unloaded"
            await _retire(old.values())

    async def load_all(self, names: list[str] | None = None) -> None:
        """Load the given models (default: all discovered); failures only mark the model unavailable."""
        wanted = names if names is not None else self.discover()
        for name in wanted:
            with contextlib.suppress(ServekitError):  # logged and recorded as the model's reason
                await self.load(name)

    async def close(self) -> None:
        for name in list(self._models):
            await self.unload(name)


async def _retire(versions: Iterable[ModelVersion]) -> None:
    """Drain and unload versions that no longer take new requests."""
    retiring = list(versions)
    for version in retiring:
        version.state = LoadState.UNLOADING
    await asyncio.gather(*(version.batcher.close() for version in retiring))

