"""The model registry: which models and versions exist, their state, and resolution.

The repository folder is read here (always in a worker thread); the event loop only swaps
finished ModelVersion objects in and out, so a version that is loading never blocks one
that is serving.

Guarantees of every (re)load:

- a version whose files and serving config are unchanged is kept as it is, never reloaded;
- new and changed versions load while the old ones keep serving, then one assignment on
  the event loop switches traffic to them at once;
- a retired version takes no new requests but finishes those it already queued before
  it is unloaded (its batcher drains);
- a changed version that fails to reload keeps serving the files it was loaded from.

Every change to one model (load, unload, removal, scaling) holds that model's lock, so a
repository poll, a management call and a repository-extension call never interleave.

What a client is told never names the server's folders: a reason (a bad config, a file that
failed to load) names files relative to the repository in errors and in the repository index
(``public``). The full reason goes to the log, and to the authenticated management API
through ``ModelEntry.reason``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path

from servekit.config import ModelConfig
from servekit.errors import ConfigError, ModelNotFound, ModelNotReady, ServekitError, VersionNotFound
from servekit.observability.metrics import record_model_loaded, record_model_unloaded
from servekit.serving.entry import (
    ModelEntry,
    Overrides,
    model_folders,
    read_model_config,
    scan_versions,
    valid_model_name,
)
from servekit.serving.traffic import pick_version
from servekit.serving.version import LoadState, ModelVersion, load_version, serving_fields, version_fingerprint

__all__ = ["Registry"]

log = logging.getLogger("servekit.repository")


@dataclass(slots=True)
class _Plan:
    config: ModelConfig
    keep: list[int]
    load: list[int]
    on_disk: list[int]


def _plan(path: Path, overrides: Overrides, current: dict[int, ModelVersion]) -> _Plan:
    """Which selected versions can stay as they are and which must (re)load (blocking)."""
    config = overrides.apply(read_model_config(path))
    numbered = [1] if config.version_folder is not None else scan_versions(path)
    on_disk = [v for v in numbered if v not in overrides.hidden_versions]
    selected = config.version_policy.select(on_disk)
    if not selected:
        raise ServekitError(f"{path}: no numbered version folders to load (e.g. {path}/1/)")
    wanted = serving_fields(config)
    keep: list[int] = []
    load: list[int] = []
    for version in selected:
        old = current.get(version)
        unchanged = (old is not None and old.state is LoadState.READY and old.batcher.unavailable_reason is None
                     and old.fingerprint == version_fingerprint(path, version) and serving_fields(old.config) == wanted)
        (keep if unchanged else load).append(version)
    return _Plan(config, keep, load, on_disk)


def _load_versions(name: str, path: Path, config: ModelConfig,
                   versions: list[int]) -> tuple[dict[int, ModelVersion], dict[int, str]]:
    """Load the given versions (blocking). Failures are kept per version."""
    loaded: dict[int, ModelVersion] = {}
    failed: dict[int, str] = {}
    for version in versions:
        try:
            loaded[version] = load_version(name, path, version, config)
        except Exception as exc:  # one bad version must not stop the others
            message = exc.message if isinstance(exc, ServekitError) else f"{type(exc).__name__}: {exc}"
            log.error("model %s version %d failed to load: %s", name, version, message)
            failed[version] = message
    return loaded, failed


class _TaskLock:
    """An asyncio lock that the task holding it may take again (a management call holds a
    model's lock across its disk changes and the reload that follows)."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._owner: asyncio.Task[object] | None = None

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        task = asyncio.current_task()
        if task is not None and self._owner is task:
            yield
            return
        async with self._lock:
            self._owner = task
            try:
                yield
            finally:
                self._owner = None


class Registry:
    """Every model of a repository folder (and of the model store, when that is another folder), by name."""

    def __init__(self, root: Path, store: Path | None = None) -> None:
        self.root = root
        self.store = store if store is not None else root
        self._extra_roots: list[Path] = []
        self._models: dict[str, ModelEntry] = {}
        self._locks: dict[str, _TaskLock] = {}
        # Every spelling of the roots a message may hold, longest first (a store inside the repository).
        forms = {str(folder) for root in (root, self.store) for folder in (root, root.absolute(), root.resolve())}
        self._root_forms = sorted((form for form in forms if form not in (".", "", os.sep)), key=len, reverse=True)
        self._rng = random.Random()

    @property
    def roots(self) -> tuple[Path, ...]:
        """Folders holding model folders, in order: a name found in several is the first one's. Any
        ``add_root`` folders, then the repository, then the model store when it is another folder."""
        own = (self.root,) if self.store.resolve() == self.root.resolve() else (self.root, self.store)
        return (*self._extra_roots, *own)

    def add_root(self, folder: Path) -> None:
        """Look for model folders in ``folder`` too, first (where the management API unpacks the
        archives it registers for this process only: a model registered there by a name wins over a
        folder of that name on disk, which the registration checked was not a model being served)."""
        if folder not in self._extra_roots:
            self._extra_roots.append(folder)

    def model_names(self) -> list[str]:
        return sorted(self._models)

    def public(self, text: str) -> str:
        """``text`` with the repository's and the store's folders left out: a path inside them is
        written relative to them (``bad/config.yaml``), as a client may be told it."""
        for root in self._root_forms:
            text = text.replace(root + os.sep, "").replace(root, "<repository>")
        return text

    def model_dir(self, name: str) -> Path | None:
        """The folder of model ``name`` on disk, or None."""
        if not valid_model_name(name):
            return None
        for root in self.roots:
            if (root / name).is_dir():
                return root / name
        return None

    def discover(self) -> list[str]:
        """Names of model folders on disk (without loading them)."""
        if not self.root.is_dir():
            raise ServekitError(f"model repository {self.root} does not exist or is not a folder")
        found = model_folders(*self.roots)
        for name, path in found.items():
            self._models.setdefault(name, ModelEntry(name, path, source=str(path)))
        return sorted(found)

    def entry(self, name: str) -> ModelEntry:
        try:
            return self._models[name]
        except KeyError:
            raise ModelNotFound(f"unknown model {name!r}") from None

    def resolve(self, name: str, version: str | None = None) -> ModelVersion:
        """The named version (by label first, then number: ``ModelEntry.version_number``), or the
        default one; 404 when absent, 503 when not ready."""
        entry = self.entry(name)
        if version in (None, ""):
            chosen = entry.default_version()
            if chosen is None:
                raise ModelNotReady(f"model {name!r} is not ready: {self.public(entry.reason)}")
            return _serving(chosen)
        assert version is not None
        number = entry.version_number(version)
        if number is None:
            raise VersionNotFound(f"model {name!r} has no version {version!r}")
        if number in entry.failed_versions:
            raise ModelNotReady(f"model {name!r} version {number} is not ready: "
                                f"{self.public(entry.failed_versions[number])}")
        chosen = entry.versions[number]
        if chosen.state is not LoadState.READY:
            raise ModelNotReady(f"model {name!r} version {number} is {chosen.state.value.lower()}")
        return _serving(chosen)

    def route(self, name: str, version: str | None = None, routing_key: str | None = None) -> ModelVersion:
        """The version one inference request runs on: the named one; else the traffic split's pick
        (sticky per ``routing_key``) when the model has a split; else the default version."""
        if version not in (None, ""):
            return self.resolve(name, version)
        entry = self.entry(name)
        split = entry.config.traffic if entry.config else None
        if split:
            ready = entry.ready_versions()
            chosen = pick_version(split, ready, routing_key, self._rng)
            if chosen is not None:
                return _serving(ready[chosen])
        return self.resolve(name)

    def index(self) -> list[dict[str, str]]:
        """One row per model version (or per model when it has none), for the repository index."""
        rows: list[dict[str, str]] = []
        for name in sorted(self._models):
            entry = self._models[name]
            versions = sorted(set(entry.versions) | set(entry.failed_versions))
            if not versions:
                rows.append({"name": name, "state": entry.state.value, "reason": self.public(entry.reason)})
            for v in versions:
                if v in entry.versions:
                    loaded = entry.versions[v]
                    down = loaded.batcher.unavailable_reason
                    state = LoadState.UNAVAILABLE if down and loaded.state is LoadState.READY else loaded.state
                    rows.append({"name": name, "version": str(v), "state": state.value,
                                 "reason": self.public(down or entry.stale.get(v, ""))})
                else:
                    rows.append({"name": name, "version": str(v), "state": LoadState.UNAVAILABLE.value,
                                 "reason": self.public(entry.failed_versions[v])})
        return rows

    @contextlib.asynccontextmanager
    async def exclusive(self, name: str) -> AsyncIterator[None]:
        """Hold model ``name``'s lock: no load, unload or removal of it runs meanwhile, except the
        holder's own (the lock is re-entrant for the task that holds it)."""
        async with self._locks.setdefault(name, _TaskLock()).hold():
            yield

    async def load(self, name: str) -> ModelEntry:
        """(Re)load a model from disk: only new and changed versions load, while the others serve."""
        async with self.exclusive(name):
            path = self.model_dir(name)
            if path is None:
                raise ModelNotFound(f"no model folder {name!r} in the model repository")
            entry = self._models.get(name)
            if entry is None:
                entry = self._models[name] = ModelEntry(name, path, source=str(path))
            entry.path = path
            if not entry.versions:
                entry.state, entry.reason = LoadState.LOADING, "loading"
            try:
                plan = await asyncio.to_thread(_plan, path, entry.overrides, dict(entry.versions))
                loaded, failed = await asyncio.to_thread(_load_versions, name, path, plan.config, plan.load)
            except Exception as exc:
                message = exc.message if isinstance(exc, ServekitError) else f"{type(exc).__name__}: {exc}"
                log.error("model %s failed to load: %s", name, message)
                if not entry.versions:
                    entry.state, entry.reason = LoadState.UNAVAILABLE, message
                if isinstance(exc, ConfigError):
                    raise ConfigError(f"model {name!r} failed to load: {self.public(message)}") from None
                raise ModelNotReady(f"model {name!r} failed to load: {self.public(message)}") from None
            for version in loaded.values():
                record_model_loaded(name, str(version.version), version.batcher.instance_count,
                                    version.load_seconds, cached=version.config.cache.enabled)
            await _retire(self._swap(entry, plan, loaded, failed))
            if not entry.versions:
                raise ModelNotReady(f"model {name!r} failed to load: {self.public(entry.reason)}")
            return entry

    def _swap(self, entry: ModelEntry, plan: _Plan, loaded: dict[int, ModelVersion],
              failed: dict[int, str]) -> list[ModelVersion]:
        """Switch the entry to its new versions in one step; returns the versions to retire."""
        serving = {v: entry.versions[v] for v in plan.keep}
        serving.update(loaded)
        stale: dict[int, str] = {}
        for version, why in failed.items():
            old = entry.versions.get(version)
            if old is not None and old.state is LoadState.READY:
                serving[version] = old
                stale[version] = f"reloading failed, serving the files loaded before: {why}"
                log.warning("model %s version %d keeps serving its previous files", entry.name, version)
        if not serving:  # a failed load never takes a serving model down: what is still on disk serves on
            for version, old in entry.ready_versions().items():
                if version in plan.on_disk:
                    serving[version] = old
                    stale[version] = "kept serving: no version selected by version_policy could load"
        retiring = [mv for v, mv in entry.versions.items() if serving.get(v) is not mv]
        entry.config = plan.config
        entry.versions = dict(sorted(serving.items()))
        entry.failed_versions = {v: why for v, why in failed.items() if v not in serving}
        entry.stale = stale
        if entry.versions:
            entry.state, entry.reason = LoadState.READY, ""
        else:
            entry.state = LoadState.UNAVAILABLE
            entry.reason = "; ".join(f"version {v}: {why}" for v, why in failed.items())
        return retiring

    async def unload(self, name: str) -> None:
        """Stop serving a model: new requests get 503, in-flight ones finish."""
        entry = self.entry(name)
        async with self.exclusive(name):
            old = entry.versions
            entry.versions, entry.failed_versions, entry.stale = {}, {}, {}
            entry.state, entry.reason = LoadState.UNAVAILABLE, "unloaded"
            await _retire(old.values())

    async def remove(self, name: str, reason: str = "removed") -> None:
        """Forget a model whose folder is gone: 503 (``reason``) while in-flight requests finish, then 404."""
        async with self.exclusive(name):
            entry = self._models.get(name)
            if entry is None:
                return
            old = entry.versions
            entry.versions, entry.failed_versions, entry.stale = {}, {}, {}
            entry.state, entry.reason = LoadState.UNLOADING, reason
            await _retire(old.values())
            if self._models.get(name) is entry:
                del self._models[name]

    async def drop_version(self, name: str, version: int) -> None:
        """Stop serving one version now (404 for it from here on); its in-flight requests finish."""
        async with self.exclusive(name):
            entry = self.entry(name)
            entry.failed_versions.pop(version, None)
            entry.stale.pop(version, None)
            old = entry.versions.pop(version, None)
            if not entry.versions:
                entry.state, entry.reason = LoadState.UNAVAILABLE, f"version {version} was removed"
            if old is not None:
                await _retire([old])

    def set_default(self, name: str, version: int) -> None:
        """Make ``version`` the default until restart; a traffic split is cleared (all traffic to it)."""
        entry = self.entry(name)
        self.resolve(name, str(version))
        entry.overrides.default_version, entry.overrides.traffic = version, {}
        entry.config = entry.overrides.apply(entry.config or ModelConfig())

    def set_traffic(self, name: str, split: dict[int, int]) -> None:
        """Split unversioned traffic by ``split`` until restart ({} clears it); every weighted version must be ready."""
        entry = self.entry(name)
        for version, weight in split.items():
            if weight > 0:
                self.resolve(name, str(version))
        entry.overrides.traffic = dict(sorted(split.items()))
        entry.config = entry.overrides.apply(entry.config or ModelConfig())

    async def scale(self, name: str, instances: int) -> ModelEntry:
        """Serve every version with ``instances`` instances: new ones load while the old ones serve."""
        async with self.exclusive(name):
            entry = self.entry(name)
            before = entry.overrides.instances
            entry.overrides.instances = instances
            try:
                await self.load(name)
            except ServekitError:
                entry.overrides.instances = before
                raise
            if entry.stale:
                entry.overrides.instances = before
                problems = "; ".join(f"version {v}: {why}" for v, why in entry.stale.items())
                raise ModelNotReady(f"model {name!r} could not scale to {instances} instances: "
                                    f"{self.public(problems)}")
            return entry

    async def load_all(self, names: list[str] | None = None) -> None:
        """Load the given models (default: all discovered); failures only mark the model unavailable."""
        wanted = names if names is not None else self.discover()
        for name in wanted:
            with contextlib.suppress(ServekitError):  # logged and recorded as the model's reason
                await self.load(name)

    async def close(self) -> None:
        for name in list(self._models):
            await self.unload(name)


def _serving(version: ModelVersion) -> ModelVersion:
    """``version``, unless none of its instances can serve (503 with the reason)."""
    down = version.batcher.unavailable_reason
    if down is not None:
        raise ModelNotReady(f"model {version.name!r} version {version.version} is not ready: {down}")
    return version


async def _retire(versions: Iterable[ModelVersion]) -> None:
    """Drain and unload versions that no longer take new requests."""
    retiring = list(versions)
    for version in retiring:
        version.state = LoadState.UNLOADING
        record_model_unloaded(version.name, str(version.version), version.batcher.instance_count)
    await asyncio.gather(*(version.batcher.close() for version in retiring))
