"""Reading and unpacking TorchServe archives: ``.mar`` (zip), ``.tar.gz`` and ``no-archive``
folders, as ``torch-model-archiver --archive-format default|tgz|no-archive`` makes them.

The archive's files sit at its root next to ``MAR-INF/MANIFEST.json``; a tgz (and a hand-made
zip) may hold them under one top folder, which is dropped. The archive the user gave is only
read: never modified, moved or deleted.

Nothing is trusted, with the rules of servekit's own archives (``repository/archive.py``):
every member name is checked (no absolute path, drive, backslash, control character, ``..``,
``.`` or empty part; a tar's leading ``./`` is allowed), links, hard links, devices, FIFOs and
encrypted members are refused, the file count and byte limits hold on the bytes actually
decompressed, the files the manifest names must be there, and unpacking writes only below a
destination folder that must not exist yet and is removed again on any failure.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from servekit.config import ModelConfig
from servekit.errors import ConfigError, InvalidInput, PayloadTooLarge
from servekit.formats.torchserve.manifest import (
    MANIFEST_PATH,
    MarManifest,
    YamlSettings,
    parse_manifest,
    parse_model_yaml,
    to_model_config,
)
from servekit.management.archive import ArchiveLimits

__all__ = ["TorchServeModel", "looks_like_mar", "read_mar", "unpack_mar"]

_CHUNK = 1024 * 1024
_MAX_SMALL_FILE = 8 * 1024 * 1024  # MANIFEST.json and model_config.yaml
_MAX_NAME_BYTES = 1024
# What reading a damaged zip or tar raises (gzip's BadGzipFile is an OSError).
_READ_ERRORS = (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, zlib.error, NotImplementedError)


@dataclass(frozen=True, slots=True)
class TorchServeModel:
    """One TorchServe archive, read: its manifest, its model_config.yaml (``model_yaml``, the
    whole file; ``settings``, the serving keys), where it came from, and where it was unpacked
    (None when only read)."""

    manifest: MarManifest
    model_yaml: dict[str, Any]
    settings: YamlSettings
    source: Path
    model_dir: Path | None = None

    @property
    def name(self) -> str:
        return self.manifest.model_name

    def model_config(self, **registration: Any) -> ModelConfig:
        """servekit's ModelConfig; keyword arguments as ``manifest.to_model_config`` takes them."""
        return to_model_config(self.manifest, self.settings, **registration)


@dataclass(frozen=True, slots=True)
class _Member:
    name: str  # relative to the archive root (the top folder dropped)
    size: int  # declared; the bytes read are checked against it
    open: Callable[[], IO[bytes]]


def _clean_name(where: str, name: str, tar: bool) -> str | None:
    """The member's path inside the archive, or None for the root itself; InvalidInput for any
    name that could point outside the destination."""
    if tar:
        while name.startswith("./"):
            name = name[2:]
        if name in ("", "."):
            return None
    if not name or "\\" in name or any(ord(c) < 32 for c in name):
        raise InvalidInput(f"{where}: member {name!r} has a name with a backslash or control characters")
    if len(name.encode("utf-8")) > _MAX_NAME_BYTES:
        raise InvalidInput(f"{where}: member name {name[:80]!r}... is too long")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise InvalidInput(f"{where}: member {name!r} has an absolute path")
    parts = name.rstrip("/").split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise InvalidInput(f"{where}: member {name!r} has a '..', '.' or empty path part")
    return "/".join(parts)


class _Budget:
    """Counts files and bytes against the limits; the declared sizes first, then the real ones."""

    def __init__(self, where: str, limits: ArchiveLimits) -> None:
        self.where, self.limits = where, limits
        self.files = 0
        self.declared = 0
        self._seen: set[str] = set()

    def add(self, name: str, size: int) -> None:
        if name in self._seen:
            raise InvalidInput(f"{self.where}: member {name!r} appears twice")
        self._seen.add(name)
        self.files += 1
        self.declared += size
        if self.files > self.limits.max_files:
            raise PayloadTooLarge(f"{self.where}: more than {self.limits.max_files} files")
        if self.declared > self.limits.max_bytes:
            raise PayloadTooLarge(f"{self.where}: over {self.limits.max_bytes} bytes unpacked (at {name!r})")


def _zip_members(where: str, archive: zipfile.ZipFile, budget: _Budget) -> list[_Member]:
    members: list[_Member] = []
    for info in archive.infolist():
        name = _clean_name(where, info.filename, tar=False)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise InvalidInput(f"{where}: member {info.filename!r} is a link; links are not allowed in archives")
        if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):  # 0: written without Unix modes
            raise InvalidInput(f"{where}: member {info.filename!r} is not a regular file or folder")
        if info.flag_bits & 0x1:
            raise InvalidInput(f"{where}: member {info.filename!r} is encrypted")
        if name is None or info.is_dir():
            continue
        budget.add(name, info.file_size)
        members.append(_Member(name, info.file_size, lambda info=info: archive.open(info)))  # type: ignore[misc]
    return members


def _tar_members(where: str, archive: tarfile.TarFile, budget: _Budget) -> list[_Member]:
    members: list[_Member] = []
    for info in archive:  # one header at a time: the limits stop a bomb before it is all read
        name = _clean_name(where, info.name, tar=True)
        if info.issym() or info.islnk():
            raise InvalidInput(f"{where}: member {info.name!r} is a link; links are not allowed in archives")
        if not (info.isfile() or info.isdir()):
            raise InvalidInput(f"{where}: member {info.name!r} is not a regular file or folder")
        if name is None or info.isdir():
            continue
        budget.add(name, info.size)
        members.append(_Member(name, info.size, lambda info=info: _tar_file(archive, info)))  # type: ignore[misc]
    return members


def _tar_file(archive: tarfile.TarFile, info: tarfile.TarInfo) -> IO[bytes]:
    source = archive.extractfile(info)
    if source is None:
        raise InvalidInput(f"{info.name!r} cannot be read")
    return source


def _folder_members(where: str, root: Path, budget: _Budget) -> list[_Member]:
    members: list[_Member] = []
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        for entry in sorted([*dirs, *files]):
            path = here / entry
            relative = path.relative_to(root).as_posix()
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                raise InvalidInput(f"{where}: {relative!r} is a link; links are not allowed in archives")
            if stat.S_ISDIR(info.st_mode):
                continue
            if not stat.S_ISREG(info.st_mode):
                raise InvalidInput(f"{where}: {relative!r} is not a regular file or folder")
            budget.add(relative, info.st_size)
            members.append(_Member(relative, info.st_size, lambda path=path: path.open("rb")))  # type: ignore[misc]
        dirs.sort()
    return members


@contextmanager
def _members(path: Path, limits: ArchiveLimits) -> Iterator[list[_Member]]:
    """The archive's files, checked, relative to the folder holding MAR-INF (the members stay
    readable while the context is open)."""
    where = path.name
    budget = _Budget(where, limits)
    if path.is_dir():
        yield _root_at_manifest(where, _folder_members(where, path, budget))
        return
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise InvalidInput(f"archive {path} cannot be read: {exc.strerror}") from None
    if size > limits.max_bytes:
        raise PayloadTooLarge(f"{where}: {size} bytes, over the limit of {limits.max_bytes} bytes")
    with ExitStack() as stack:
        try:
            if zipfile.is_zipfile(path):
                members = _zip_members(where, stack.enter_context(zipfile.ZipFile(path)), budget)
            elif tarfile.is_tarfile(path):
                members = _tar_members(where, stack.enter_context(tarfile.open(path, "r:*")), budget)
            else:
                raise InvalidInput(f"{where}: not a TorchServe archive (a .mar or zip, a .tar.gz, or a folder)")
        except _READ_ERRORS as exc:
            raise InvalidInput(f"{where}: a damaged archive: {exc}") from None
        yield _root_at_manifest(where, members)


def _root_at_manifest(where: str, members: list[_Member]) -> list[_Member]:
    """Members relative to the folder that holds MAR-INF/MANIFEST.json: the root, or one top folder."""
    names = {member.name for member in members}
    if MANIFEST_PATH in names:
        return members
    tops = {member.name.split("/", 1)[0] for member in members}
    if len(tops) == 1 and all("/" in name for name in names):
        top = tops.pop()
        if f"{top}/{MANIFEST_PATH}" in names:
            return [_Member(m.name[len(top) + 1 :], m.size, m.open) for m in members]
    raise InvalidInput(f"{where}: no {MANIFEST_PATH}; is it a TorchServe archive (torch-model-archiver)?")


def _read_small(where: str, member: _Member) -> bytes:
    if member.size > _MAX_SMALL_FILE:
        raise InvalidInput(f"{where}: {member.name} is too large")
    try:
        with member.open() as source:
            data = source.read(_MAX_SMALL_FILE + 1)
    except _READ_ERRORS as exc:
        raise InvalidInput(f"{where}: {member.name} cannot be read: {exc}") from None
    if len(data) > _MAX_SMALL_FILE:
        raise InvalidInput(f"{where}: {member.name} is too large")
    return data


def _describe(path: Path, members: list[_Member]) -> tuple[MarManifest, dict[str, Any], YamlSettings]:
    where = path.name
    by_name = {member.name: member for member in members}
    manifest = parse_manifest(_read_small(where, by_name[MANIFEST_PATH]), f"{where}: {MANIFEST_PATH}")
    missing = [name for name in manifest.archive_files() if name not in by_name]
    if missing:
        raise ConfigError(f"{where}: {MANIFEST_PATH} names files the archive does not hold: {', '.join(missing)}")
    if manifest.config_file is None:
        return manifest, {}, YamlSettings()
    text = _read_small(where, by_name[manifest.config_file])
    model_yaml, settings = parse_model_yaml(text, f"{where}: {manifest.config_file}")
    return manifest, model_yaml, settings


def looks_like_mar(path: Path) -> bool:
    """Whether ``path`` looks like a TorchServe archive, by its layout alone (cheap; nothing is
    checked: ``read_mar`` does that): a folder or zip holding ``MAR-INF/MANIFEST.json`` at its
    root or under one top folder, or a tar file (servekit's own archives are zip files)."""
    try:
        if path.is_dir():
            return (path / MANIFEST_PATH).is_file() or any(
                (child / MANIFEST_PATH).is_file() for child in path.iterdir() if child.is_dir())
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                return any(name == MANIFEST_PATH or name.endswith("/" + MANIFEST_PATH) for name in archive.namelist())
        return tarfile.is_tarfile(path)
    except _READ_ERRORS:
        return False


def read_mar(path: Path, limits: ArchiveLimits | None = None) -> TorchServeModel:
    """Check a TorchServe archive and read its manifest and model_config.yaml, writing nothing."""
    with _members(path, limits or ArchiveLimits()) as members:
        manifest, model_yaml, settings = _describe(path, members)
    return TorchServeModel(manifest, model_yaml, settings, path)


def unpack_mar(path: Path, destination: Path, limits: ArchiveLimits | None = None) -> TorchServeModel:
    """Unpack a TorchServe archive into ``destination`` (created; it must not exist), MAR-INF
    included, so that it is the ``model_dir`` handlers see. On failure nothing is left behind."""
    limits = limits or ArchiveLimits()
    where = path.name
    with _members(path, limits) as members:
        manifest, model_yaml, settings = _describe(path, members)
        destination.mkdir(mode=0o755)
        try:
            root = destination.resolve()
            budget = limits.max_bytes
            for member in members:
                target = (root / member.name).resolve()
                if not target.is_relative_to(root):  # the name checks make this impossible; keep it so
                    raise InvalidInput(f"{where}: member {member.name!r} points outside the model folder")
                budget -= _copy_member(where, member, target, budget)
        except BaseException:
            shutil.rmtree(destination, ignore_errors=True)
            raise
    return TorchServeModel(manifest, model_yaml, settings, path, destination)


def _copy_member(where: str, member: _Member, target: Path, budget: int) -> int:
    """Write one member to ``target`` (a new file), checking its size as it streams; returns it."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        raise InvalidInput(f"{where}: cannot unpack {member.name!r}: {exc.strerror}") from None
    written = 0
    with os.fdopen(descriptor, "wb") as out, _reading(where, member) as source:
        while chunk := _read(where, member, source):
            written += len(chunk)
            if written > member.size or written > budget:
                raise PayloadTooLarge(f"{where}: {member.name!r} unpacks to more bytes than allowed")
            out.write(chunk)
    return written


@contextmanager
def _reading(where: str, member: _Member) -> Iterator[IO[bytes]]:
    try:
        source = member.open()
    except _READ_ERRORS as exc:
        raise InvalidInput(f"{where}: {member.name!r} cannot be read: {exc}") from None
    with source:
        yield source


def _read(where: str, member: _Member, source: IO[bytes]) -> bytes:
    try:
        return source.read(_CHUNK)
    except _READ_ERRORS as exc:
        raise InvalidInput(f"{where}: {member.name!r} cannot be read: {exc}") from None
