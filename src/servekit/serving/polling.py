"""Repository polling: every ``interval_s`` seconds, load what changed on disk and forget what went.

A poll compares a cheap snapshot (the path, size and mtime of every file of every model
folder) with the previous one and acts on differences only: a new or changed model folder is
(re)loaded through ``Registry.load`` (which keeps unchanged versions serving untouched, and
loads new ones while the old ones serve), a model folder that disappeared is removed after
its in-flight requests finish. A model unloaded through the repository extension stays
unloaded until its files change. Write new versions into place with one rename (copy to a
hidden folder first) so a poll never sees half a version.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path

from servekit.errors import ServekitError
from servekit.serving.entry import valid_model_name
from servekit.serving.registry import Registry

__all__ = ["RepositoryPoller", "snapshot"]

log = logging.getLogger("servekit.repository")

Snapshot = dict[str, tuple[tuple[str, int, int], ...]]


def _folder_state(folder: Path) -> tuple[tuple[str, int, int], ...]:
    found: list[tuple[str, int, int]] = []
    for parent, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__pycache__"]
        for name in files:
            path = Path(parent, name)
            with contextlib.suppress(OSError):
                info = path.stat()
                found.append((path.relative_to(folder).as_posix(), info.st_size, info.st_mtime_ns))
        for name in dirs:  # an empty version folder counts as a version
            found.append((Path(parent, name).relative_to(folder).as_posix() + "/", 0, 0))
    return tuple(sorted(found))


def snapshot(roots: tuple[Path, ...]) -> Snapshot:
    """Every model folder under ``roots`` (the first root wins a name) with its files' state (blocking)."""
    state: Snapshot = {}
    for root in roots:
        with contextlib.suppress(OSError):
            for folder in sorted(root.iterdir()):
                if folder.is_dir() and valid_model_name(folder.name) and folder.name not in state:
                    state[folder.name] = _folder_state(folder)
    return state


class RepositoryPoller:
    def __init__(self, registry: Registry, interval_s: float) -> None:
        if interval_s <= 0:
            raise ValueError("the poll interval must be positive")
        self.registry = registry
        self.interval_s = interval_s
        self._previous: Snapshot = {}
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Take the first snapshot (what start-up loaded) and poll in the background."""
        known = set(self.registry.model_names())
        current = await asyncio.to_thread(snapshot, self.registry.roots)
        # Only the models start-up knew: a folder that appeared since (while start-up was loading, or
        # while this worker was slower to start than its siblings) is new to the first poll.
        self._previous = {name: state for name, state in current.items() if name in known}
        self._task = asyncio.create_task(self._run(), name="servekit-repository-poll")
        log.info("polling the repository every %g s", self.interval_s)

    async def stop(self) -> None:
        """Stop polling; a poll under way finishes first (it may be loading a model)."""
        self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def _run(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.interval_s)
                return
            try:
                await self.poll_once()
            except Exception:  # a poll must never end polling
                log.exception("repository poll failed")

    async def poll_once(self) -> tuple[list[str], list[str]]:
        """One poll; returns the names (re)loaded and removed."""
        current = await asyncio.to_thread(snapshot, self.registry.roots)
        changed = sorted(name for name, state in current.items() if self._previous.get(name) != state)
        removed = sorted(set(self._previous) - set(current))
        self._previous = current
        for name in changed:
            try:
                await self.registry.load(name)
                log.info("poll: loaded changes of model %s", name)
            except ServekitError as exc:
                log.error("poll: model %s: %s", name, exc.message)
        for name in removed:
            async with self.registry.exclusive(name):
                if self.registry.model_dir(name) is None:  # not registered again since the snapshot
                    await self.registry.remove(name)
                    log.info("poll: model %s is gone from disk and no longer served", name)
        return changed, removed
