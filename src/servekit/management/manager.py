"""What the management API does, without HTTP: register, describe, scale, route and unregister models.

Answers and error messages have TorchServe's shape and wording (``{"status": ...}``, "Model not
found: NAME"), so TorchServe's clients and scripts read them unchanged; describe adds servekit's
own fields after TorchServe's (``servekit.management.describe``).

Registered servekit archives live on disk, in the model store, so they are still there after a
restart and a repository poll agrees with them; registered TorchServe archives last while the
server runs, as in TorchServe (``servekit.management.torchserve``). Scaling, the default version
and traffic splits are runtime overrides (see ``Overrides``) that last until the server
restarts. Unregistering deletes only what servekit unpacked, never a folder or archive someone
else put there (``ModelStore.registered_here``). Every change to a model holds that model's lock
in the registry across its disk writes and the reload that follows, so polls and
repository-extension calls never see it half done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection
from pathlib import Path
from typing import Any

from servekit.config import ServerSettings
from servekit.errors import Conflict, InvalidInput, ModelNotFound, ServekitError, VersionNotFound
from servekit.management import torchserve
from servekit.management.archive import ArchiveLimits
from servekit.management.describe import describe_failed, describe_version
from servekit.management.sources import public_url
from servekit.management.store import ModelStore, RegistrationOverrides
from servekit.serving.entry import ModelEntry, scan_versions, valid_model_name
from servekit.serving.registry import Registry
from servekit.serving.traffic import parse_split
from servekit.types import is_decimal

__all__ = ["MAX_PAGE", "ModelManager"]

log = logging.getLogger("servekit.management")

MAX_PAGE = 1000
MAX_INSTANCES = 64


def _instances(name: str, value: int | None) -> None:
    if value is not None and not 1 <= value <= MAX_INSTANCES:
        raise InvalidInput(f"{name} must be from 1 to {MAX_INSTANCES}")


class ModelManager:
    def __init__(self, registry: Registry, settings: ServerSettings) -> None:
        self.registry = registry
        self.limits = ArchiveLimits(max_bytes=settings.max_archive_bytes, max_files=settings.max_archive_files)
        self.store = ModelStore(settings.store, self.limits, settings.allowed_urls)
        self._area: Path | None = None  # this process's folder of TorchServe registrations, made on first use
        self._registered: set[str] = set()  # models registered over the API (describe: loadedAtStartup false)

    # -- reading ---------------------------------------------------------------------------------------

    def _entry(self, name: str) -> ModelEntry:
        try:
            return self.registry.entry(name)
        except ModelNotFound:
            raise ModelNotFound(f"Model not found: {name}") from None

    def _version(self, entry: ModelEntry, version: str, also_on_disk: Collection[int] = ()) -> int:
        """The version ``version`` names (a label or number; a number may also be a folder on disk)."""
        number = entry.version_number(version)
        if number is None and is_decimal(version) and int(version) in also_on_disk:
            number = int(version)
        if number is None:
            raise VersionNotFound(f"Model version: {version} does not exist for model: {entry.name}")
        return number

    def list_models(self, limit: int = 100, next_page_token: str | None = None) -> dict[str, Any]:
        """A page of models by name. ``nextPageToken`` (present when more follow; as in TorchServe, the
        offset of the next page) asks for the next one."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(f"limit must be from 1 to {MAX_PAGE}")
        if next_page_token is not None and not is_decimal(next_page_token):
            raise InvalidInput(f"next_page_token {next_page_token!r} is not a token this server gave")
        start = int(next_page_token or 0)
        names = self.registry.model_names()
        document: dict[str, Any] = {}
        if start + limit < len(names):
            document["nextPageToken"] = str(start + limit)
        document["models"] = [{"modelName": n, "modelUrl": self.registry.entry(n).source}
                              for n in names[start:start + limit]]
        return document

    def describe(self, name: str, version: str | None = None) -> list[dict[str, Any]]:
        """One description per version (all of them, or ``version``: a label or number; "all": all)."""
        entry = self._entry(name)
        known = sorted(set(entry.versions) | set(entry.failed_versions))
        if version not in (None, "", "all"):
            assert version is not None
            known = [self._version(entry, version)]
        if not known:
            return [describe_failed(entry, None)]
        at_startup = name not in self._registered
        return [describe_version(entry, entry.versions[v], loaded_at_startup=at_startup) if v in entry.versions
                else describe_failed(entry, v) for v in known]

    # -- registering -----------------------------------------------------------------------------------

    async def register(self, url: str, model_name: str | None = None,
                       overrides: RegistrationOverrides | None = None) -> dict[str, Any]:
        """Fetch and check an archive (a TorchServe archive, or servekit's own), unpack it into the
        store and load its version while the model's other versions serve. Nothing of a failed
        registration stays on disk."""
        name, document = await self._register(url, model_name, overrides)
        self._registered.add(name)
        return document

    async def register_at_start(self, values: list[str]) -> None:
        """The ``--models`` archives (``servekit.management.torchserve.model_specs``), one by one; an
        archive that fails is logged and the others load, as a broken model folder does."""
        for name, archive in torchserve.model_specs(values, self.store.root):
            try:
                _, document = await self._register(archive, name, None, torchserve_only=True)
            except ServekitError as exc:
                log.error("--models %s: %s", f"{name}={archive}" if name else archive, exc.message)
                continue
            log.info("--models %s: %s", archive, document["status"])

    async def _register(self, url: str, model_name: str | None, overrides: RegistrationOverrides | None,
                        torchserve_only: bool = False) -> tuple[str, dict[str, Any]]:
        overrides = overrides or RegistrationOverrides()
        if not url:
            raise InvalidInput("Parameter url is required.")
        if model_name is not None and not valid_model_name(model_name):
            raise InvalidInput(f"{model_name!r} cannot be a model name (a plain folder name, not hidden)")
        _instances("initial_workers", overrides.initial_workers)
        staging = await asyncio.to_thread(self.store.new_staging)
        try:
            archive = await asyncio.to_thread(self.store.fetch, url, staging)
            if await asyncio.to_thread(torchserve.is_torchserve_archive, archive):
                document = await self._register_torchserve(url, archive, staging, model_name, overrides)
            elif torchserve_only:  # a servekit archive installs into the store for good: not at every start
                raise InvalidInput(f"{url} is not a TorchServe archive: --models takes those; serve servekit models "
                                   "from a REPOSITORY, or register servekit archives once over the management API")
            else:
                document = await self._register_servekit(url, archive, staging, model_name, overrides)
        finally:
            await asyncio.to_thread(self.store.discard, staging)
        return document.pop("_name"), document

    async def _register_servekit(self, url: str, archive: Path, staging: Path, model_name: str | None,
                                 overrides: RegistrationOverrides) -> dict[str, Any]:
        if archive.is_dir():
            raise InvalidInput(f"{url!r} is a folder: register an archive (servekit archive, or TorchServe's)")
        manifest, unpacked = await asyncio.to_thread(self.store.unpack, archive, staging)
        name = model_name or manifest.name
        async with self.registry.exclusive(name):
            existing = self.registry.model_dir(name)
            if existing is not None and self._area is not None and existing.parent == self._area:
                raise Conflict(f"model {name!r} was registered from a TorchServe archive: register this archive "
                               "under another model_name")
            if existing is not None and overrides:
                raise InvalidInput(f"model {name!r} is registered already: batch_size, max_batch_delay, "
                                   f"initial_workers and response_timeout apply to a new model (scale with "
                                   f"PUT /models/{name})")
            if overrides:
                await asyncio.to_thread(overrides.write_into, unpacked)
            added = await asyncio.to_thread(self.store.install, unpacked, name, manifest.version, existing)
            entry = await self._load_registered(name, manifest.version, added, is_new=existing is None)
            entry.source = public_url(url)
        loaded = entry.versions.get(manifest.version)
        note = "" if loaded else " (not served: the model's version_policy does not select it)"
        instances = loaded.batcher.instance_count if loaded else 0
        log.info("registered %s version %d from %s%s", name, manifest.version, public_url(url), note)
        return {"status": f'Model "{name}" Version: {manifest.version} registered with {instances} initial '
                          f"workers{note}",
                "modelName": name, "modelVersion": str(manifest.version), "serving": loaded is not None,
                "_name": name}

    async def _register_torchserve(self, url: str, archive: Path, staging: Path, model_name: str | None,
                                   overrides: RegistrationOverrides) -> dict[str, Any]:
        """A TorchServe archive, as ``servekit.management.torchserve`` lays it out."""
        model = await asyncio.to_thread(torchserve.read_archive, archive, self.limits)
        name = model_name or model.name
        if not valid_model_name(name):
            raise InvalidInput(f"{name!r} cannot be a model name (a plain folder name, not hidden)")
        label = model.manifest.model_version
        area = await asyncio.to_thread(self._process_area)
        async with self.registry.exclusive(name):
            found = self.registry.model_dir(name)
            existing = found if found is not None and found.parent == area else None
            if existing is None and name in self.registry.model_names():
                raise Conflict(f"model {name!r} exists already; register the archive under another model_name")
            number = 1
            if existing is not None:
                entry = self.registry.entry(name)
                if any(loaded.label == label for loaded in entry.versions.values()):
                    raise Conflict(f"Model version {label} is already registered for model {name}")
                if overrides:
                    raise InvalidInput(f"model {name!r} is registered already: batch_size, max_batch_delay, "
                                       "initial_workers and response_timeout apply to its first version")
                number = max(scan_versions(existing), default=0) + 1
            staged = await asyncio.to_thread(torchserve.stage_version, model, archive, staging, number, self.limits,
                                             overrides if existing is None else None)
            added = await asyncio.to_thread(self.store.install, staged, name, number, existing, area, False)
            entry = await self._load_registered(name, number, added, is_new=existing is None)
            entry.source = public_url(url)
        instances = entry.versions[number].batcher.instance_count
        log.info("registered %s version %d (%s) from %s", name, number, label, public_url(url))
        return {"status": f'Model "{name}" Version: {label} registered with {instances} initial workers',
                "_name": name}

    def _process_area(self) -> Path:
        if self._area is None:
            self._area = self.store.prepare_process_area()
            self.registry.add_root(self._area)
        return self._area

    async def _load_registered(self, name: str, version: int, added: Path, *, is_new: bool) -> ModelEntry:
        try:
            entry = await self.registry.load(name)
            problem = entry.failed_versions.get(version) or entry.stale.get(version)
            if problem:
                raise InvalidInput(f"model {name!r} version {version} failed to load: {problem}")
            return entry
        except ServekitError as exc:
            trashed = await asyncio.to_thread(self.store.move_to_trash, added)
            if is_new:
                await self.registry.remove(name, reason="registration failed")
            else:
                with contextlib.suppress(ServekitError):
                    await self.registry.load(name)
            await asyncio.to_thread(self.store.discard, trashed)
            if isinstance(exc, InvalidInput):
                raise
            raise InvalidInput(f"registration failed, nothing was kept: {exc.message}") from None

    # -- changing --------------------------------------------------------------------------------------

    async def scale(self, name: str, min_worker: int | None, max_worker: int | None,
                    synchronous: bool = False) -> dict[str, Any]:
        """Serve every version with ``min_worker`` instances (instances do not autoscale: max_worker
        only has to be at least min_worker); the new instances load while the old ones serve. The
        work is done before this returns, with or without ``synchronous``, which chooses
        TorchServe's answer: "Workers scaled to N ..." (with) or "Processing worker updates..."."""
        self._entry(name)
        _instances("min_worker", min_worker)
        _instances("max_worker", max_worker)
        if min_worker is None and max_worker is None:
            raise InvalidInput("give min_worker (and optionally max_worker): PUT /models/NAME?min_worker=2")
        if min_worker is not None and max_worker is not None and max_worker < min_worker:
            raise InvalidInput("max_worker must be at least min_worker")
        instances = min_worker if min_worker is not None else max_worker
        assert instances is not None
        await self.registry.scale(name, instances)
        if synchronous:
            return {"status": f"Workers scaled to {instances} for model: {name}"}
        return {"status": "Processing worker updates..."}

    def set_default(self, name: str, version: str) -> dict[str, Any]:
        entry = self._entry(name)
        number = self._version(entry, version)
        self.registry.set_default(name, number)
        return {"status": f'Default version successfully updated for model "{name}" to "{version}"'}

    def set_traffic(self, name: str, document: object) -> dict[str, Any]:
        self._entry(name)
        split = parse_split(document)
        self.registry.set_traffic(name, split)
        shown = {str(v): w for v, w in sorted(split.items())}
        return {"status": f"traffic of model {name!r} split {shown}" if split else
                f"traffic split of model {name!r} cleared", "traffic": shown}

    async def unregister(self, name: str, version: str | None = None) -> dict[str, Any]:
        """Take a model (or one version) out of service; delete from disk only what servekit
        unpacked. New requests get 404 (503 while a whole model drains); requests in flight finish
        first. A version whose folder stays on disk is not loaded again until the server restarts."""
        async with self.registry.exclusive(name):
            entry = self._entry(name)
            path = self.registry.model_dir(name)
            present = (set(entry.versions) | set(entry.failed_versions) | _on_disk(path)) - \
                entry.overrides.hidden_versions
            number = self._version(entry, version, present) if version else None
            if number is None or not present - {number}:
                await self.registry.remove(name, reason="being unregistered")
                self._registered.discard(name)
                if path is not None:
                    await asyncio.to_thread(self._delete_registered, path)
                log.info("unregistered model %s", name)
                return {"status": f'Model "{name}" unregistered'}
            version_dir = path / str(number) if path is not None else None
            trashed: Path | None = None
            if version_dir is not None and self.store.registered_here(version_dir):
                trashed = await asyncio.to_thread(self.store.move_to_trash, version_dir)
            else:
                entry.overrides.hidden_versions.add(number)
            with contextlib.suppress(ServekitError):  # whatever else loads, this version goes
                await self.registry.load(name)
            await self.registry.drop_version(name, number)
            if trashed is not None:
                await asyncio.to_thread(self.store.discard, trashed)
        log.info("unregistered model %s version %d", name, number)
        return {"status": f'Model "{name}" unregistered'}

    def _delete_registered(self, path: Path) -> None:
        """Delete the model folder if servekit made it, else the version folders it added (blocking)."""
        folders = [path] if self.store.registered_here(path) else \
            [child for child in path.iterdir() if child.is_dir() and self.store.registered_here(child)]
        for folder in folders:
            self.store.discard(self.store.move_to_trash(folder))

    def close(self) -> None:
        """Remove this process's TorchServe registrations from disk (blocking; the models are unloaded)."""
        if self._area is not None:
            self.store.remove_process_area()
            self._area = None


def _on_disk(path: Path | None) -> set[int]:
    if path is None:
        return set()
    with contextlib.suppress(OSError):
        return {int(p.name) for p in path.iterdir() if p.is_dir() and is_decimal(p.name)}
    return set()
