"""Reading and unpacking TorchServe archives made by the real archiver, and refusing unsafe ones."""

from __future__ import annotations

import hashlib
import io
import json
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from servekit.errors import ConfigError, InvalidInput, PayloadTooLarge
from servekit.formats.torchserve import read_mar, unpack_mar
from servekit.management.archive import ArchiveLimits
from tests.formats.torchserve.mar import HANDLERS, archive

MANIFEST = {"runtime": "python", "model": {"modelName": "m", "handler": "handler.py", "modelVersion": "1.0"}}


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One archive per format, around the echo handler, an extra file and model_config.yaml."""
    export = tmp_path_factory.mktemp("archives")
    common = {"version": "1.0", "extra": (HANDLERS / "index_to_name.json",), "config": HANDLERS / "model_config.yaml"}
    return {
        "default": archive(export, "echo", HANDLERS / "echo_handler.py", **common),  # type: ignore[arg-type]
        "tgz": archive(export, "echotgz", HANDLERS / "echo_handler.py", archive_format="tgz", **common),  # type: ignore[arg-type]
        "no-archive": archive(export, "echodir", HANDLERS / "echo_handler.py", archive_format="no-archive",
                              **common),  # type: ignore[arg-type]
    }


def digest(path: Path) -> str:
    if path.is_dir():
        return ";".join(f"{p.relative_to(path)}:{hashlib.sha256(p.read_bytes()).hexdigest()}"
                        for p in sorted(path.rglob("*")) if p.is_file())
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("archive_format", ["default", "tgz", "no-archive"])
def test_read_and_unpack_every_archiver_format(made: dict[str, Path], archive_format: str, tmp_path: Path) -> None:
    source = made[archive_format]
    before = digest(source)
    read = read_mar(source)
    assert read.manifest.handler == "echo_handler.py"
    assert read.manifest.config_file == "model_config.yaml"
    assert read.manifest.archiver_version == "0.12.0"
    assert read.model_yaml["labels"] == {"positive": 1}  # a handler-specific key, kept for the handler
    assert (read.settings.batch_size, read.settings.max_batch_delay_ms, read.settings.max_workers) == (4, 50, 2)
    assert read.model_dir is None
    unpacked = unpack_mar(source, tmp_path / "model")
    assert unpacked.manifest == read.manifest
    assert unpacked.model_dir == tmp_path / "model"
    assert sorted(p.relative_to(tmp_path / "model").as_posix() for p in (tmp_path / "model").rglob("*")
                  if p.is_file()) == ["MAR-INF/MANIFEST.json", "echo_handler.py", "index_to_name.json",
                                      "model_config.yaml"]
    config = unpacked.model_config()
    assert (config.runtime, config.max_batch_size, config.instances, config.execution_timeout_s) == (
        "torchserve", 4, 1, 2)
    assert digest(source) == before  # the user's archive is only read
    assert source.exists()


def test_the_tgz_top_folder_is_dropped(made: dict[str, Path]) -> None:
    with tarfile.open(made["tgz"]) as tarred:
        assert all(name.startswith("echotgz/") for name in tarred.getnames())
    assert read_mar(made["tgz"]).name == "echotgz"


def test_the_destination_must_be_new(made: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    with pytest.raises(FileExistsError):
        unpack_mar(made["default"], tmp_path / "taken")


def write_zip(path: Path, members: dict[str, bytes], manifest: dict[str, object] | None = MANIFEST,
              link: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zipped:
        if manifest is not None:
            zipped.writestr("MAR-INF/MANIFEST.json", json.dumps(manifest))
        for name, data in members.items():
            zipped.writestr(name, data)
        if link is not None:
            info = zipfile.ZipInfo(link)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zipped.writestr(info, "/etc/passwd")
    return path


def write_tar(path: Path, members: dict[str, bytes], link: str | None = None, hard_link: bool = False) -> Path:
    with tarfile.open(path, "w:gz") as tarred:
        for name, data in {"MAR-INF/MANIFEST.json": json.dumps(MANIFEST).encode(), **members}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tarred.addfile(info, io.BytesIO(data))
        if link is not None:
            info = tarfile.TarInfo(link)
            info.type = tarfile.LNKTYPE if hard_link else tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            tarred.addfile(info)
    return path


@pytest.mark.parametrize(("members", "message"), [
    ({"../evil.py": b"x"}, "'..'"),
    ({"a/../../evil.py": b"x"}, "'..'"),
    ({"/abs.py": b"x"}, "absolute path"),
    ({"C:/x.py": b"x"}, "absolute path"),
    ({"a\\b.py": b"x"}, "backslash"),
])
def test_zip_slip_is_refused_and_nothing_is_left(tmp_path: Path, members: dict[str, bytes], message: str) -> None:
    bad = write_zip(tmp_path / "bad.mar", {"handler.py": b"", **members})
    with pytest.raises(InvalidInput, match=message):
        unpack_mar(bad, tmp_path / "out")
    with pytest.raises(InvalidInput, match=message):
        read_mar(bad)
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "evil.py").exists()


def test_tar_slip_and_links_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"'\.\.'"):
        unpack_mar(write_tar(tmp_path / "a.tar.gz", {"handler.py": b"", "../evil.py": b"x"}), tmp_path / "a")
    with pytest.raises(InvalidInput, match="link"):
        unpack_mar(write_tar(tmp_path / "b.tar.gz", {"handler.py": b""}, link="x.py"), tmp_path / "b")
    with pytest.raises(InvalidInput, match="link"):
        unpack_mar(write_tar(tmp_path / "c.tar.gz", {"handler.py": b""}, link="y.py", hard_link=True), tmp_path / "c")
    with pytest.raises(InvalidInput, match="link"):
        unpack_mar(write_zip(tmp_path / "d.mar", {"handler.py": b""}, link="z.py"), tmp_path / "d")
    assert not any((tmp_path / name).exists() for name in "abcd")
    assert not (tmp_path / "evil.py").exists()


def test_links_in_a_folder_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    (folder / "MAR-INF").mkdir(parents=True)
    (folder / "MAR-INF" / "MANIFEST.json").write_text(json.dumps(MANIFEST))
    (folder / "handler.py").write_text("")
    (folder / "secret.py").symlink_to("/etc/passwd")
    with pytest.raises(InvalidInput, match="link"):
        unpack_mar(folder, tmp_path / "out")


def test_limits_hold(tmp_path: Path) -> None:
    many = write_zip(tmp_path / "many.mar", {"handler.py": b"", **{f"f{i}.txt": b"x" for i in range(5)}})
    with pytest.raises(PayloadTooLarge, match="more than 3 files"):
        unpack_mar(many, tmp_path / "a", ArchiveLimits(max_bytes=10**6, max_files=3))
    big = write_zip(tmp_path / "big.mar", {"handler.py": b"", "weights.bin": b"\0" * 100_000})
    with pytest.raises(PayloadTooLarge, match="bytes"):
        unpack_mar(big, tmp_path / "b", ArchiveLimits(max_bytes=50_000, max_files=100))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_manifest_problems(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"no MAR-INF/MANIFEST\.json"):
        read_mar(write_zip(tmp_path / "none.mar", {"handler.py": b""}, manifest=None))
    missing = {"model": {**MANIFEST["model"], "serializedFile": "model.pt"}}  # type: ignore[dict-item]
    with pytest.raises(ConfigError, match=r"does not hold: model\.pt"):
        read_mar(write_zip(tmp_path / "missing.mar", {"handler.py": b""}, manifest=missing))


def test_not_an_archive_and_a_damaged_one(tmp_path: Path) -> None:
    (tmp_path / "plain.mar").write_bytes(b"junk")
    with pytest.raises(InvalidInput, match="not a TorchServe archive"):
        read_mar(tmp_path / "plain.mar")
    good = write_zip(tmp_path / "good.mar", {"handler.py": b"x" * 10_000})
    with zipfile.ZipFile(good) as zipped:
        start = zipped.getinfo("handler.py").header_offset + 30 + len("handler.py") + 100  # in its data
    damaged = bytearray(good.read_bytes())
    damaged[start : start + 20] = b"\xff" * 20
    (tmp_path / "damaged.mar").write_bytes(bytes(damaged))
    with pytest.raises(InvalidInput):
        unpack_mar(tmp_path / "damaged.mar", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_member_twice_is_refused(tmp_path: Path) -> None:
    dup = write_zip(tmp_path / "dup.mar", {"handler.py": b"", "x.txt": b"1"})
    with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(dup, "a") as zipped:
        zipped.writestr("x.txt", b"2")
    with pytest.raises(InvalidInput, match="appears twice"):
        read_mar(dup)
