"""Model archives: one file holding one version of a model, its model folder's files and a manifest.

Inside the archive (a zip file)::

    MANIFEST.json       name, version, runtime, servekit version, sha256 of every other file
    config.yaml         the model folder's own files: config, handler, extra files ...
    handler.py
    2/model.onnx        ... and the one version folder

Why zip rather than tar.gz: the central directory lists every member with its type and size
before a byte is decompressed, so the file count and size limits and the member checks run
first, and MANIFEST.json is read without scanning the whole file; zip has no hard-link,
device or FIFO members (tar has all three), only symbolic links marked in the Unix mode
bits, which are refused; and TorchServe's ``.mar`` is a zip too.

Nothing is trusted: every member name is checked (no absolute path, drive, backslash,
``..``, ``.`` or empty part), links, special and encrypted members are refused, the limits
hold on the bytes actually decompressed (not only the declared sizes), the archive must hold
exactly the files the manifest lists and each must match its checksum. Extraction writes
only below a destination folder that must not exist yet; on any failure that folder is
removed again.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from servekit import __version__
from servekit.errors import InvalidInput, PayloadTooLarge
from servekit.runtimes import detect_runtime
from servekit.runtimes.python import handler_path
from servekit.serving.entry import read_model_config, scan_versions, valid_model_name
from servekit.types import is_decimal

__all__ = ["MANIFEST", "ArchiveLimits", "Manifest", "default_archive_name", "extract_archive", "pack_model",
           "verify_archive"]

MANIFEST = "MANIFEST.json"
FORMAT: Literal["servekit-archive/1"] = "servekit-archive/1"
_CHUNK = 1024 * 1024
_MAX_MANIFEST_BYTES = 8 * 1024 * 1024
_MAX_NAME_BYTES = 1024
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # the zip epoch: the same folder always packs to the same bytes
_SKIPPED = ("__pycache__",)


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["servekit-archive/1"] = FORMAT
    name: str
    version: int = Field(ge=1)
    runtime: str
    servekit_version: str
    files: dict[str, str] = Field(description="path inside the archive -> sha256 (hex) of its bytes")

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)


@dataclass(frozen=True, slots=True)
class ArchiveLimits:
    max_bytes: int = 4 * 1024**3  # the archive file, and all its files unpacked
    max_files: int = 10_000


# -- packing -----------------------------------------------------------------------------------------


def _files_to_pack(model_dir: Path, version: int) -> list[PurePosixPath]:
    """Model-level files and the version folder's files, relative, sorted; hidden files and caches skipped."""
    picked: list[PurePosixPath] = []
    for folder, dirs, files in os.walk(model_dir):
        here = Path(folder)
        relative = PurePosixPath(here.relative_to(model_dir).as_posix())
        for name in [*dirs, *files]:
            if (here / name).is_symlink():
                raise InvalidInput(f"{here / name} is a link; archives hold only regular files: copy it in")
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _SKIPPED
                         and not (relative == PurePosixPath(".") and is_decimal(d) and d != str(version)))
        for name in files:
            if name.startswith(".") or name.endswith(".pyc"):
                continue
            path = relative / name
            if not (here / name).is_file():
                raise InvalidInput(f"{here / name} is not a regular file")
            picked.append(path)
    return sorted(picked)


def _runtime_of(model_dir: Path, version: int) -> str:
    config = read_model_config(model_dir)
    if config.runtime:
        return config.runtime
    has_handler = config.handler is not None or handler_path(model_dir, None)[0].is_file()
    try:
        return detect_runtime(model_dir / str(version), has_handler)
    except FileNotFoundError as exc:
        raise InvalidInput(str(exc)) from None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _name_and_version(model_dir: Path, version: int | None, name: str | None) -> tuple[str, int]:
    if not model_dir.is_dir():
        raise InvalidInput(f"{model_dir} is not a model folder")
    versions = scan_versions(model_dir)
    if not versions:
        raise InvalidInput(f"{model_dir} has no numbered version folder (e.g. {model_dir}/1/)")
    chosen = versions[-1] if version is None else version
    if chosen not in versions:
        raise InvalidInput(f"{model_dir} has no version {chosen} (it has {', '.join(map(str, versions))})")
    model_name = name or read_model_config(model_dir).name or model_dir.resolve().name
    if not valid_model_name(model_name):
        raise InvalidInput(f"{model_name!r} cannot be a model name (a plain folder name, not hidden)")
    return model_name, chosen


def default_archive_name(model_dir: Path, version: int | None = None, name: str | None = None) -> str:
    """``NAME-VERSION.zip``, with the name and version ``pack_model`` would choose."""
    model_name, chosen = _name_and_version(model_dir, version, name)
    return f"{model_name}-{chosen}.zip"


def pack_model(model_dir: Path, output: Path, *, version: int | None = None, name: str | None = None) -> Manifest:
    """Write an archive of ``model_dir``'s version ``version`` (default: the highest) to ``output``.

    The config is validated and the runtime found first; the file appears only when complete.
    """
    model_name, chosen = _name_and_version(model_dir, version, name)
    if output.resolve().is_relative_to(model_dir.resolve()):
        raise InvalidInput(f"write the archive outside the model folder it packs ({output})")
    files = _files_to_pack(model_dir, chosen)
    manifest = Manifest(name=model_name, version=chosen, runtime=_runtime_of(model_dir, chosen),
                        servekit_version=__version__,
                        files={path.as_posix(): _sha256(model_dir / path) for path in files})
    partial = output.with_name(f".{output.name}.partial")
    try:
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
            _write_member(archive, MANIFEST, manifest.to_json())
            _write_directory(archive, f"{chosen}/")
            for path in files:
                _write_member(archive, path.as_posix(), model_dir / path)
        partial.replace(output)
    finally:
        partial.unlink(missing_ok=True)
    return manifest


def _write_member(archive: zipfile.ZipFile, name: str, content: bytes | Path) -> None:
    info = zipfile.ZipInfo(name, _FIXED_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = (stat.S_IFREG | 0o644) << 16
    if isinstance(content, bytes):
        archive.writestr(info, content)
        return
    info.file_size = content.stat().st_size  # lets zipfile choose zip64 only for files that need it
    with content.open("rb") as source, archive.open(info, "w") as target:
        shutil.copyfileobj(source, target, _CHUNK)


def _write_directory(archive: zipfile.ZipFile, name: str) -> None:
    info = zipfile.ZipInfo(name, _FIXED_TIME)
    info.external_attr = ((stat.S_IFDIR | 0o755) << 16) | 0x10  # 0x10: the MS-DOS directory bit
    archive.writestr(info, b"")


# -- checking and unpacking --------------------------------------------------------------------------


def _check_name(where: str, name: str) -> None:
    """Refuse any member name that could point outside the destination folder."""
    if not name or "\0" in name or "\\" in name or any(ord(c) < 32 for c in name):
        raise InvalidInput(f"{where}: member {name!r} has a name with a backslash or control characters")
    if len(name.encode("utf-8")) > _MAX_NAME_BYTES:
        raise InvalidInput(f"{where}: member name {name[:80]!r}... is too long")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise InvalidInput(f"{where}: member {name!r} has an absolute path")
    parts = name.rstrip("/").split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise InvalidInput(f"{where}: member {name!r} has a '..', '.' or empty path part")


def _check_members(where: str, archive: zipfile.ZipFile, limits: ArchiveLimits) -> list[zipfile.ZipInfo]:
    """Every member checked; returns the regular files (directories are implied by their paths)."""
    members = archive.infolist()
    if len(members) > limits.max_files + 1:
        raise PayloadTooLarge(f"{where}: {len(members)} members, over the limit of {limits.max_files} files")
    files: list[zipfile.ZipInfo] = []
    seen: set[str] = set()
    for info in members:
        _check_name(where, info.filename)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise InvalidInput(f"{where}: member {info.filename!r} is a link; links are not allowed in archives")
        if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):  # 0: made where files have no Unix mode
            raise InvalidInput(f"{where}: member {info.filename!r} is not a regular file or folder")
        if info.flag_bits & 0x1:
            raise InvalidInput(f"{where}: member {info.filename!r} is encrypted")
        key = info.filename.rstrip("/")
        if key in seen:
            raise InvalidInput(f"{where}: member {key!r} appears twice")
        seen.add(key)
        if not info.is_dir():
            files.append(info)
    declared = sum(info.file_size for info in files)
    if declared > limits.max_bytes:
        raise PayloadTooLarge(f"{where}: {declared} bytes unpacked, over the limit of {limits.max_bytes} bytes")
    return files


def _read_manifest(where: str, archive: zipfile.ZipFile, files: list[zipfile.ZipInfo]) -> Manifest:
    by_name = {info.filename: info for info in files}
    info = by_name.get(MANIFEST)
    if info is None:
        raise InvalidInput(f"{where}: no {MANIFEST} at the root; is it a servekit archive?")
    if info.file_size > _MAX_MANIFEST_BYTES:
        raise InvalidInput(f"{where}: {MANIFEST} is too large")
    try:
        manifest = Manifest.model_validate_json(archive.read(info))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}" for e in exc.errors())
        raise InvalidInput(f"{where}: {MANIFEST}: {problems}") from None
    listed, present = set(manifest.files), set(by_name) - {MANIFEST}
    if listed - present:
        missing = ", ".join(sorted(listed - present))
        raise InvalidInput(f"{where}: files in {MANIFEST} but not in the archive: {missing}")
    if present - listed:
        raise InvalidInput(f"{where}: files not listed in {MANIFEST}: {', '.join(sorted(present - listed))}")
    for path in listed:
        top = path.split("/", 1)[0]
        if is_decimal(top) and (top != str(manifest.version) or "/" not in path):
            raise InvalidInput(f"{where}: {path!r} is outside version {manifest.version}, the archive's version")
    if not valid_model_name(manifest.name):
        raise InvalidInput(f"{where}: {MANIFEST}: {manifest.name!r} cannot be a model name")
    return manifest


def _copy_checked(where: str, archive: zipfile.ZipFile, info: zipfile.ZipInfo, expected: str,
                  target: IO[bytes] | None, budget: int) -> int:
    """Stream one member (into ``target`` when given), checking its size and checksum; returns its size."""
    digest = hashlib.sha256()
    size = 0
    try:
        with archive.open(info) as source:
            while chunk := source.read(_CHUNK):
                size += len(chunk)
                if size > info.file_size or size > budget:
                    raise PayloadTooLarge(f"{where}: {info.filename!r} unpacks to more bytes than allowed")
                digest.update(chunk)
                if target is not None:
                    target.write(chunk)
    except (zipfile.BadZipFile, EOFError, OSError, NotImplementedError) as exc:
        raise InvalidInput(f"{where}: {info.filename!r} cannot be read: {exc}") from None
    if digest.hexdigest() != expected.lower():
        raise InvalidInput(f"{where}: {info.filename!r} does not match its sha256 in {MANIFEST}")
    return size


def _open(path: Path, limits: ArchiveLimits) -> zipfile.ZipFile:
    where = path.name
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise InvalidInput(f"archive {path} cannot be read: {exc.strerror}") from None
    if size > limits.max_bytes:
        raise PayloadTooLarge(f"{where}: {size} bytes, over the limit of {limits.max_bytes} bytes")
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InvalidInput(f"{where}: not a servekit archive (a zip file): {exc}") from None


def verify_archive(path: Path, limits: ArchiveLimits | None = None) -> Manifest:
    """Check an archive completely (members, manifest, every checksum) without writing anything."""
    limits = limits or ArchiveLimits()
    with _open(path, limits) as archive:
        files = _check_members(path.name, archive, limits)
        manifest = _read_manifest(path.name, archive, files)
        budget = limits.max_bytes
        for info in files:
            if info.filename != MANIFEST:
                budget -= _copy_checked(path.name, archive, info, manifest.files[info.filename], None, budget)
    return manifest


def extract_archive(path: Path, destination: Path, limits: ArchiveLimits | None = None) -> Manifest:
    """Unpack a checked archive into ``destination`` (created; it must not exist): the model folder's
    files and the version folder, not the manifest. On failure nothing is left behind."""
    limits = limits or ArchiveLimits()
    where = path.name
    with _open(path, limits) as archive:
        files = _check_members(where, archive, limits)
        manifest = _read_manifest(where, archive, files)
        destination.mkdir(mode=0o755)
        try:
            root = destination.resolve()
            (root / str(manifest.version)).mkdir()
            budget = limits.max_bytes
            for info in files:
                if info.filename == MANIFEST:
                    continue
                target = (root / info.filename).resolve()
                if not target.is_relative_to(root):  # the name checks make this impossible; keep it so
                    raise InvalidInput(f"{where}: member {info.filename!r} points outside the model folder")
                try:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
                except OSError as exc:
                    raise InvalidInput(f"{where}: cannot unpack {info.filename!r}: {exc.strerror}") from None
                with os.fdopen(descriptor, "wb") as out:
                    budget -= _copy_checked(where, archive, info, manifest.files[info.filename], out, budget)
        except BaseException:
            shutil.rmtree(destination, ignore_errors=True)
            raise
    return manifest
