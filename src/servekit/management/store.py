"""The model store: the one folder servekit writes models to (blocking I/O: call from a worker thread).

Everything is written below the store's root. Archives are fetched and unpacked into a fresh
folder under ``.servekit/staging`` (hidden, so no scan ever sees it as a model) and only a
complete, checked model or version folder is renamed into place, which is atomic on one
file system: a repository scan sees all of a version or none of it. Removal is the same in
reverse: a rename into ``.servekit/trash``, then deletion.

What servekit unpacked, and only that, may be deleted again: every model or version folder it
installs holds an empty ``.servekit-registered`` file (``REGISTERED_MARK``), written before the
folder is renamed into place, so it is part of what a scan first sees and never changes. A
folder without it was put there by someone else, and unregistering leaves it on disk.

Where a registered archive goes: servekit's own archives into the store itself (``NAME/``,
loaded again at the next start); archives of other servers (TorchServe's) into
``.servekit/unpacked-PID/NAME/`` (``process_area``), which lasts only while this process
runs, as a TorchServe registration does: list such archives in ``--models`` to serve them at
every start. The area is per process, so several worker processes never share one.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from servekit.config import ModelConfig, parse_model_config
from servekit.errors import Conflict, InvalidInput
from servekit.management.archive import ArchiveLimits, Manifest, extract_archive
from servekit.management.sources import download, is_remote, locate_local
from servekit.serving.entry import read_model_config
from servekit.types import is_decimal

__all__ = ["REGISTERED_MARK", "WORK_FOLDER", "ModelStore", "RegistrationOverrides", "mark_registered"]

log = logging.getLogger("servekit.repository")

WORK_FOLDER = ".servekit"
REGISTERED_MARK = ".servekit-registered"
_AREA_PREFIX = "unpacked-"
# Config fields a registration or scaling may set, so they may differ between versions' archives.
_ADJUSTABLE = frozenset({"max_batch_size", "instances", "default_version", "traffic", "version_policy",
                         "execution_timeout_s"})


@dataclass(frozen=True, slots=True)
class RegistrationOverrides:
    """``batch_size``, ``max_batch_delay`` (ms), ``initial_workers`` and ``response_timeout`` (s)
    of a registration, over config.yaml (``execution_timeout_s`` for the timeout)."""

    batch_size: int | None = None
    max_batch_delay_ms: float | None = None
    initial_workers: int | None = None
    response_timeout_s: float | None = None

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.batch_size, self.max_batch_delay_ms, self.initial_workers,
                                           self.response_timeout_s))

    def write_into(self, model_dir: Path) -> ModelConfig:
        """Write the effective config.yaml (the archive's, with these values) and return it, validated."""
        path = model_dir / "config.yaml"
        raw: Any = yaml.safe_load(path.read_text(encoding="utf-8")) if path.exists() else {}
        raw = raw if isinstance(raw, dict) else {}
        if self.batch_size is not None:
            raw["max_batch_size"] = self.batch_size
        if self.max_batch_delay_ms is not None:
            batching = raw.get("batching") if isinstance(raw.get("batching"), dict) else {}
            raw["batching"] = {**batching, "max_queue_delay_ms": self.max_batch_delay_ms}
        if self.initial_workers is not None:
            raw["instances"] = self.initial_workers
        if self.response_timeout_s is not None:
            raw["execution_timeout_s"] = self.response_timeout_s
        text = yaml.safe_dump(raw, sort_keys=False)
        config = parse_model_config(text, "registration parameters")
        path.write_text(text, encoding="utf-8")
        return config


def _comparable(config: ModelConfig) -> dict[str, Any]:
    fields = config.model_dump(exclude=set(_ADJUSTABLE))
    fields["batching"].pop("max_queue_delay_ms", None)
    return fields


def _model_files(model_dir: Path) -> dict[str, bytes]:
    """The model folder's own files (not config.yaml, versions, hidden files or caches), by path."""
    found: dict[str, bytes] = {}
    for path in sorted(model_dir.rglob("*")):
        relative = path.relative_to(model_dir)
        top = relative.parts[0]
        hidden = any(part.startswith(".") or part == "__pycache__" for part in relative.parts)
        if is_decimal(top) or top == "config.yaml" or hidden or path.suffix == ".pyc" or not path.is_file():
            continue
        found[relative.as_posix()] = path.read_bytes()
    return found


def mark_registered(folder: Path) -> None:
    """Mark a model or version folder as servekit's own (see the module docstring)."""
    (folder / REGISTERED_MARK).touch()


class ModelStore:
    """Fetch, unpack, install and remove models below ``root``."""

    def __init__(self, root: Path, limits: ArchiveLimits, allowed_urls: Sequence[str] = ()) -> None:
        self.root = root
        self.limits = limits
        self.allowed_urls = list(allowed_urls)

    @property
    def work(self) -> Path:
        return self.root / WORK_FOLDER

    def prepare(self) -> None:
        """Create the store's folders and clear what an interrupted registration or removal left."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.work.mkdir(mode=0o700, exist_ok=True)
        for name in ("staging", "trash"):
            shutil.rmtree(self.work / name, ignore_errors=True)
            (self.work / name).mkdir(mode=0o700)

    def contains(self, path: Path) -> bool:
        return path.resolve().is_relative_to(self.root.resolve())

    def registered_here(self, path: Path) -> bool:
        """Whether servekit installed the model or version folder ``path`` (and so may delete it)."""
        return self.contains(path) and (path / REGISTERED_MARK).is_file()

    @property
    def process_area(self) -> Path:
        """This process's folder of models that last only while it runs (see the module docstring)."""
        return self.work / f"{_AREA_PREFIX}{os.getpid()}"

    def prepare_process_area(self) -> Path:
        """Create this process's area, and remove the areas of processes that are gone."""
        self.work.mkdir(mode=0o700, parents=True, exist_ok=True)
        for folder in self.work.glob(f"{_AREA_PREFIX}*"):
            pid = folder.name[len(_AREA_PREFIX):]
            if is_decimal(pid) and int(pid) != os.getpid() and not _alive(int(pid)):
                shutil.rmtree(folder, ignore_errors=True)
        self.process_area.mkdir(mode=0o700, exist_ok=True)
        return self.process_area

    def remove_process_area(self) -> None:
        shutil.rmtree(self.process_area, ignore_errors=True)

    def new_staging(self) -> Path:
        staging = self.work / "staging"
        staging.mkdir(mode=0o700, parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="register-", dir=staging))

    def fetch(self, url: str, staging: Path) -> Path:
        """The archive file ``url`` names: downloaded into ``staging``, or found in the store or an allowed folder."""
        if is_remote(url):
            target = staging / "archive.download"
            download(url, target, self.allowed_urls, self.limits.max_bytes)
            return target
        return locate_local(url, self.root, self.allowed_urls)

    def unpack(self, archive: Path, staging: Path) -> tuple[Manifest, Path]:
        model_dir = staging / "model"
        return extract_archive(archive, model_dir, self.limits), model_dir

    def install(self, unpacked: Path, name: str, version: int, existing: Path | None,
                into: Path | None = None, compare: bool = True) -> Path:
        """Rename an unpacked model (or, for a model already here, its version folder) into place,
        in ``into`` (default: the store); returns what was added, marked as servekit's. Conflict
        when that version exists or (with ``compare``) the model's shared files differ."""
        mark_registered(unpacked / str(version))
        if existing is None:
            mark_registered(unpacked)
            target = (into or self.root) / name
            try:
                unpacked.rename(target)
            except OSError:
                raise Conflict(f"model {name!r} already exists in the model store {self.root}") from None
            log.info("registered model %s version %d in %s", name, version, target)
            return target
        if not self.contains(existing):
            raise Conflict(f"model {name!r} is served from {existing}, outside the model store {self.root}; "
                           "register the archive under another model_name")
        target = existing / str(version)
        if target.exists():
            raise Conflict(f"model {name!r} already has a version {version}; unregister it first "
                           f"(DELETE /models/{name}/{version}) or pack another version number")
        if compare:
            self._check_compatible(unpacked, existing, name, version)
        try:
            (unpacked / str(version)).rename(target)
        except OSError:
            raise Conflict(f"model {name!r} already has a version {version}") from None
        log.info("registered model %s version %d in %s", name, version, target)
        return target

    @staticmethod
    def _check_compatible(unpacked: Path, existing: Path, name: str, version: int) -> None:
        """Versions of one model share its config.yaml and handler: a new version's must match."""
        shared = "versions of one model share config.yaml, the handler and extra files; register it under another " \
                 "model_name"
        ours, theirs = read_model_config(unpacked), read_model_config(existing)
        if _comparable(ours) != _comparable(theirs):
            fields = sorted(k for k, v in _comparable(ours).items() if _comparable(theirs).get(k) != v)
            raise Conflict(f"version {version}'s config.yaml differs from model {name!r} in "
                           f"{', '.join(fields)}; {shared}")
        files, present = _model_files(unpacked), _model_files(existing)
        if files != present:
            differing = sorted(path for path in set(files) | set(present) if files.get(path) != present.get(path))
            raise Conflict(f"version {version}'s files {', '.join(differing)} differ from model {name!r}; {shared}")

    def move_to_trash(self, path: Path) -> Path:
        """Take a folder out of the store's view at once (an atomic rename); ``empty_trash`` deletes it."""
        if not self.contains(path):
            raise InvalidInput(f"{path} is outside the model store {self.root}")
        (self.work / "trash").mkdir(mode=0o700, parents=True, exist_ok=True)
        trashed = self.work / "trash" / uuid.uuid4().hex
        path.rename(trashed)
        return trashed

    def discard(self, path: Path) -> None:
        """Delete a folder in the store (staging, trash or an installed one), quietly if it is gone."""
        if path.exists() and self.contains(path):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True
