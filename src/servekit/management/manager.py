"""What the management API does, without HTTP: register, describe, scale, route and unregister models.

Registered models and versions live on disk, in the model store, so they are still there after
a restart and a repository poll agrees with them; scaling, the default version and traffic
splits are runtime overrides (see ``Overrides``) that last until the server restarts. Every
change to a model holds that model's lock in the registry across its disk writes and the
reload that follows, so polls and repository-extension calls never see it half done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

from servekit.config import ServerSettings
from servekit.errors import InvalidInput, ModelNotFound, ServekitError
from servekit.management.archive import ArchiveLimits
from servekit.management.sources import public_url
from servekit.management.store import ModelStore, RegistrationOverrides
from servekit.serving.entry import ModelEntry, valid_model_name
from servekit.serving.registry import Registry
from servekit.serving.traffic import parse_split
from servekit.serving.version import LoadState, ModelVersion
from servekit.types import is_decimal

__all__ = ["MAX_PAGE", "ModelManager"]

log = logging.getLogger("servekit.management")

MAX_PAGE = 1000
MAX_INSTANCES = 64


def _version_number(text: str) -> int:
    if not is_decimal(text) or int(text) < 1:
        raise InvalidInput(f"{text!r} is not a version number")
    return int(text)


def _instances(name: str, value: int | None) -> None:
    if value is not None and not 1 <= value <= MAX_INSTANCES:
        raise InvalidInput(f"{name} must be from 1 to {MAX_INSTANCES}")


class ModelManager:
    def __init__(self, registry: Registry, settings: ServerSettings) -> None:
        self.registry = registry
        limits = ArchiveLimits(max_bytes=settings.max_archive_bytes, max_files=settings.max_archive_files)
        self.store = ModelStore(settings.store, limits, settings.allowed_urls)

    # -- reading ---------------------------------------------------------------------------------------

    def list_models(self, limit: int = 100, next_page_token: str | None = None) -> dict[str, Any]:
        """A page of models by name; ``nextPageToken`` (present when more follow) asks for the next one."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(f"limit must be from 1 to {MAX_PAGE}")
        names = [n for n in self.registry.model_names() if next_page_token is None or n > next_page_token]
        page = names[:limit]
        models = [{"modelName": n, "modelUrl": self.registry.entry(n).source,
                   "status": self.registry.entry(n).state.value} for n in page]
        document: dict[str, Any] = {"models": models}
        if len(names) > limit:
            document["nextPageToken"] = page[-1]
        return document

    def describe(self, name: str, version: str | None = None) -> list[dict[str, Any]]:
        """One description per version (all of them, or ``version``; "all" means all)."""
        entry = self.registry.entry(name)
        known = sorted(set(entry.versions) | set(entry.failed_versions))
        if version not in (None, "", "all"):
            assert version is not None
            number = _version_number(version)
            if number not in known:
                raise ModelNotFound(f"model {name!r} has no version {version!r}")
            known = [number]
        if not known:
            return [{"modelName": name, "modelVersion": None, "modelUrl": entry.source,
                     "status": entry.state.value, "reason": entry.reason}]
        return [self._describe_version(entry, v) for v in known]

    def _describe_version(self, entry: ModelEntry, version: int) -> dict[str, Any]:
        base: dict[str, Any] = {"modelName": entry.name, "modelVersion": str(version), "modelUrl": entry.source}
        mv = entry.versions.get(version)
        if mv is None:
            return {**base, "status": LoadState.UNAVAILABLE.value, "reason": entry.failed_versions.get(version, "")}
        default = entry.default_version()
        split = entry.config.traffic if entry.config else None
        return {**base, **_describe_loaded(mv), "reason": entry.stale.get(version, ""),
                "default": default is mv, "trafficWeight": split.get(version, 0) if split else None}

    # -- registering -----------------------------------------------------------------------------------

    async def register(self, url: str, model_name: str | None = None,
                       overrides: RegistrationOverrides | None = None) -> dict[str, Any]:
        """Fetch, check and unpack an archive into the store, then load its version while the
        model's other versions serve. Nothing of a failed registration stays on disk."""
        overrides = overrides or RegistrationOverrides()
        if not url:
            raise InvalidInput("give the archive: POST /models?url=ARCHIVE")
        if model_name is not None and not valid_model_name(model_name):
            raise InvalidInput(f"{model_name!r} cannot be a model name (a plain folder name, not hidden)")
        _instances("initial_workers", overrides.initial_workers)
        staging = await asyncio.to_thread(self.store.new_staging)
        try:
            archive = await asyncio.to_thread(self.store.fetch, url, staging)
            manifest, unpacked = await asyncio.to_thread(self.store.unpack, archive, staging)
            name = model_name or manifest.name
            async with self.registry.exclusive(name):
                existing = self.registry.model_dir(name)
                if existing is not None and overrides:
                    raise InvalidInput(f"model {name!r} is registered already: batch_size, max_batch_delay and "
                                       f"initial_workers apply to a new model (scale with PUT /models/{name})")
                if overrides:
                    await asyncio.to_thread(overrides.write_into, unpacked)
                added = await asyncio.to_thread(self.store.install, unpacked, name, manifest.version, existing)
                entry = await self._load_registered(name, manifest.version, added, is_new=existing is None)
                entry.source = public_url(url)
        finally:
            await asyncio.to_thread(self.store.discard, staging)
        serving = manifest.version in entry.versions
        note = "" if serving else " (not served: the model's version_policy does not select it)"
        log.info("registered %s version %d from %s%s", name, manifest.version, public_url(url), note)
        return {"status": f"model {name!r} version {manifest.version} registered{note}", "modelName": name,
                "modelVersion": str(manifest.version), "serving": serving}

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

    async def scale(self, name: str, min_worker: int | None, max_worker: int | None) -> dict[str, Any]:
        """Serve every version with ``min_worker`` instances (instances do not autoscale: max_worker
        only has to be at least min_worker); the new instances load while the old ones serve."""
        _instances("min_worker", min_worker)
        _instances("max_worker", max_worker)
        if min_worker is None and max_worker is None:
            raise InvalidInput("give min_worker (and optionally max_worker): PUT /models/NAME?min_worker=2")
        if min_worker is not None and max_worker is not None and max_worker < min_worker:
            raise InvalidInput("max_worker must be at least min_worker")
        instances = min_worker if min_worker is not None else max_worker
        assert instances is not None
        await self.registry.scale(name, instances)
        return {"status": f"model {name!r} serves with {instances} instance{'s' if instances > 1 else ''}"}

    def set_default(self, name: str, version: str) -> dict[str, Any]:
        number = _version_number(version)
        self.registry.set_default(name, number)
        return {"status": f"version {number} is the default of model {name!r}"}

    def set_traffic(self, name: str, document: object) -> dict[str, Any]:
        split = parse_split(document)
        self.registry.set_traffic(name, split)
        shown = {str(v): w for v, w in sorted(split.items())}
        return {"status": f"traffic of model {name!r} split {shown}" if split else
                f"traffic split of model {name!r} cleared", "traffic": shown}

    async def unregister(self, name: str, version: str | None = None) -> dict[str, Any]:
        """Take a model (or one version) out of service and delete it from the store. New requests
        get 404 (503 while a whole model drains); requests in flight finish first."""
        number = _version_number(version) if version else None
        async with self.registry.exclusive(name):
            entry = self.registry.entry(name)
            path = self.registry.model_dir(name)
            if path is not None and not self.store.contains(path):
                raise InvalidInput(f"model {name!r} is in {path}, outside the model store {self.store.root}: only "
                                   f"registered models can be unregistered (unload it with POST "
                                   f"/v2/repository/models/{name}/unload)")
            present = set(entry.versions) | set(entry.failed_versions) | _on_disk(path)
            if number is not None and number not in present:
                raise ModelNotFound(f"model {name!r} has no version {number}")
            if number is None or not present - {number}:
                await self.registry.remove(name, reason="being unregistered")
                if path is not None:
                    folder = await asyncio.to_thread(self.store.move_to_trash, path)
                    await asyncio.to_thread(self.store.discard, folder)
                return {"status": f"model {name!r} unregistered"}
            trashed: Path | None = None
            if path is not None and (path / str(number)).is_dir():
                trashed = await asyncio.to_thread(self.store.move_to_trash, path / str(number))
            with contextlib.suppress(ServekitError):  # whatever else loads, this version goes
                await self.registry.load(name)
            await self.registry.drop_version(name, number)
            if trashed is not None:
                await asyncio.to_thread(self.store.discard, trashed)
        return {"status": f"model {name!r} version {number} unregistered"}


def _on_disk(path: Path | None) -> set[int]:
    if path is None:
        return set()
    with contextlib.suppress(OSError):
        return {int(p.name) for p in path.iterdir() if p.is_dir() and is_decimal(p.name)}
    return set()


def _describe_loaded(mv: ModelVersion) -> dict[str, Any]:
    batching = mv.config.batching
    batcher = mv.batcher
    return {
        "status": mv.state.value,
        "runtime": mv.runtime_name,
        "platform": mv.platform,
        "device": mv.device,
        "minWorkers": batcher.instance_count,
        "maxWorkers": batcher.instance_count,
        "workers": [{"id": f"{mv.name}:{mv.version}/{i}", "status": mv.state.value}
                    for i in range(batcher.instance_count)],
        "batchSize": mv.max_batch_size,
        "maxBatchDelay": batching.max_queue_delay_ms,
        "batching": {
            "enabled": mv.max_batch_size > 0 and batching.enabled,
            "maxQueueSize": batching.max_queue_size,
            "preferredBatchSizes": list(batching.preferred_batch_sizes),
            "timeoutMs": batching.timeout_ms,
            "queueDepth": batcher.queue_depth,
            "busyInstances": batcher.busy,
        },
        "loadSeconds": round(mv.load_seconds, 4),
        "statistics": mv.stats.summary(mv.max_batch_size),
    }
