from __future__ import annotations

import hashlib
import json
import stat
import zipfile
from pathlib import Path

import pytest

from servekit import __version__
from servekit.errors import InvalidInput, PayloadTooLarge
from servekit.management.archive import ArchiveLimits, extract_archive, pack_model, verify_archive
from tests.builders import write_onnx_model


def model_folder(root: Path) -> Path:
    folder = root / "lin"
    write_onnx_model(folder / "1")
    write_onnx_model(folder / "2")
    (folder / "config.yaml").write_text("max_batch_size: 8\n")
    (folder / "labels.txt").write_text("a\nb\nc\n")
    (folder / "assets").mkdir()
    (folder / "assets" / "vocab.json").write_text("{}")
    (folder / ".hidden").write_text("not packed")
    return folder


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def test_pack_holds_one_version_the_model_files_and_a_manifest(tmp_path: Path) -> None:
    folder = model_folder(tmp_path)
    manifest = pack_model(folder, tmp_path / "lin.zip")
    assert (manifest.name, manifest.version, manifest.runtime, manifest.servekit_version) == ("lin", 2, "onnx",
                                                                                              __version__)
    assert sorted(manifest.files) == ["2/model.onnx", "assets/vocab.json", "config.yaml", "labels.txt"]
    assert manifest.files["labels.txt"] == hashlib.sha256(b"a\nb\nc\n").hexdigest()
    with zipfile.ZipFile(tmp_path / "lin.zip") as archive:
        assert json.loads(archive.read("MANIFEST.json"))["files"] == manifest.files
    assert verify_archive(tmp_path / "lin.zip") == manifest
    assert pack_model(folder, tmp_path / "v1.zip", version=1, name="other").files.keys() >= {"1/model.onnx"}


def test_packing_is_reproducible(tmp_path: Path) -> None:
    folder = model_folder(tmp_path)
    pack_model(folder, tmp_path / "a.zip")
    pack_model(folder, tmp_path / "b.zip")
    assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "b.zip").read_bytes()


def test_pack_refuses_links_and_missing_versions(tmp_path: Path) -> None:
    folder = model_folder(tmp_path)
    with pytest.raises(InvalidInput, match="has no version 7"):
        pack_model(folder, tmp_path / "x.zip", version=7)
    with pytest.raises(InvalidInput, match="outside the model folder"):
        pack_model(folder, folder / "x.zip")
    (folder / "link.txt").symlink_to(folder / "labels.txt")
    with pytest.raises(InvalidInput, match="is a link"):
        pack_model(folder, tmp_path / "x.zip")
    assert not (tmp_path / "x.zip").exists()


def test_extract_writes_the_model_folder_without_the_manifest(tmp_path: Path) -> None:
    pack_model(model_folder(tmp_path), tmp_path / "lin.zip")
    manifest = extract_archive(tmp_path / "lin.zip", tmp_path / "out")
    assert manifest.version == 2
    assert files_under(tmp_path / "out") == {"2", "2/model.onnx", "assets", "assets/vocab.json", "config.yaml",
                                             "labels.txt"}


def forge(path: Path, members: dict[str, bytes], *, links: tuple[str, ...] = (), version: int = 1,
          manifest_files: dict[str, str] | None = None) -> Path:
    """A zip whose manifest lists every member with its true checksum (so only the check under test fails)."""
    files = manifest_files if manifest_files is not None else {
        name: hashlib.sha256(data).hexdigest() for name, data in members.items()}
    manifest = {"format": "servekit-archive/1", "name": "evil", "version": version, "runtime": "onnx",
                "servekit_version": __version__, "files": files}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("MANIFEST.json", json.dumps(manifest))
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            mode = stat.S_IFLNK | 0o777 if name in links else stat.S_IFREG | 0o644
            info.external_attr = mode << 16
            archive.writestr(info, data)
    return path


@pytest.mark.parametrize(("members", "links", "message"), [
    ({"../evil.txt": b"x", "1/model.onnx": b"m"}, (), r"'\.\.'"),
    ({"1/../../evil.txt": b"x"}, (), r"'\.\.'"),
    ({"/tmp/evil.txt": b"x"}, (), "absolute path"),
    ({"C:/evil.txt": b"x"}, (), "absolute path"),
    ({"1\\..\\evil.txt": b"x"}, (), "backslash"),
    ({"1/model.onnx": b"/etc/passwd"}, ("1/model.onnx",), "is a link"),
    ({"1//model.onnx": b"m"}, (), "empty path part"),
    ({"2/model.onnx": b"m"}, (), "outside version 1"),
    ({"1": b"m"}, (), "outside version 1"),
])
def test_malicious_members_are_refused_and_nothing_is_written(tmp_path: Path, members: dict[str, bytes],
                                                             links: tuple[str, ...], message: str) -> None:
    forged = forge(tmp_path / "evil.zip", members, links=links)
    before = files_under(tmp_path)
    with pytest.raises(InvalidInput, match=message):
        extract_archive(forged, tmp_path / "store" / "out")
    with pytest.raises(InvalidInput, match=message):
        verify_archive(forged)
    assert files_under(tmp_path) == before


def test_checksums_and_the_file_list_must_match(tmp_path: Path) -> None:
    good = hashlib.sha256(b"model").hexdigest()
    cases = [
        ({"1/model.onnx": b"tampered"}, {"1/model.onnx": good}, "does not match its sha256"),
        ({"1/model.onnx": b"model", "1/extra.bin": b"x"}, {"1/model.onnx": good}, "not listed"),
        ({"1/model.onnx": b"model"}, {"1/model.onnx": good, "1/gone.bin": good}, "not in the archive"),
    ]
    for number, (members, listed, message) in enumerate(cases):
        forged = forge(tmp_path / f"case{number}.zip", members, manifest_files=listed)
        with pytest.raises(InvalidInput, match=message):
            extract_archive(forged, tmp_path / "out")
        assert not (tmp_path / "out").exists()


def test_size_and_count_limits_hold_on_the_real_bytes(tmp_path: Path) -> None:
    big = forge(tmp_path / "big.zip", {"1/model.onnx": b"\0" * 200_000})  # compresses to a few hundred bytes
    assert big.stat().st_size < 10_000
    with pytest.raises(PayloadTooLarge, match="over the limit of 100000 bytes"):
        extract_archive(big, tmp_path / "out", ArchiveLimits(max_bytes=100_000))
    many = forge(tmp_path / "many.zip", {f"1/f{n}": b"x" for n in range(20)})
    with pytest.raises(PayloadTooLarge, match="over the limit of 10 files"):
        extract_archive(many, tmp_path / "out", ArchiveLimits(max_files=10))
    assert not (tmp_path / "out").exists()


def test_a_member_whose_declared_size_lies_is_refused(tmp_path: Path) -> None:
    forged = forge(tmp_path / "liar.zip", {"1/model.onnx": b"\0" * 200_000})
    data = bytearray(forged.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):  # local header, central directory
        start = 0
        while (start := data.find(signature, start)) != -1:
            name_at = start + (30 if signature == b"PK\x03\x04" else 46)
            if data[name_at:name_at + 12] == b"1/model.onnx":
                data[start + offset:start + offset + 4] = (100).to_bytes(4, "little")  # "100 bytes unpacked"
            start += 4
    forged.write_bytes(bytes(data))
    with pytest.raises(InvalidInput, match=r"1/model\.onnx"):
        extract_archive(forged, tmp_path / "out", ArchiveLimits(max_bytes=100_000))
    assert not (tmp_path / "out").exists()


def test_not_an_archive(tmp_path: Path) -> None:
    (tmp_path / "junk.zip").write_bytes(b"not a zip at all")
    with pytest.raises(InvalidInput, match="not a servekit archive"):
        verify_archive(tmp_path / "junk.zip")
    with zipfile.ZipFile(tmp_path / "plain.zip", "w") as archive:
        archive.writestr("1/model.onnx", b"m")
    with pytest.raises(InvalidInput, match=r"no MANIFEST\.json"):
        verify_archive(tmp_path / "plain.zip")


def test_the_cli_extracts_an_archive_into_a_repository_once(tmp_path: Path) -> None:
    """``servekit archive --extract FILE --into REPOSITORY``: what an image build runs to bake an archive in."""
    from click.testing import CliRunner

    from servekit.cli import main

    pack_model(model_folder(tmp_path / "src"), tmp_path / "lin-2.zip")
    repository = tmp_path / "models"
    runner = CliRunner()
    done = runner.invoke(main, ["archive", "--extract", str(tmp_path / "lin-2.zip"), "--into", str(repository)])
    assert done.exit_code == 0, done.output
    assert f"into {repository / 'lin'}: model lin version 2" in done.output
    assert files_under(repository / "lin") >= {"config.yaml", "labels.txt", "2", "2/model.onnx"}
    again = runner.invoke(main, ["archive", "--extract", str(tmp_path / "lin-2.zip"), "--into", str(repository)])
    assert again.exit_code != 0 and "exists already" in again.output
    alone = runner.invoke(main, ["archive", "--extract", str(tmp_path / "lin-2.zip")])
    assert alone.exit_code != 0 and "--extract FILE and --into REPOSITORY go together" in alone.output
    (tmp_path / "broken.zip").write_bytes(b"not a zip")
    broken = runner.invoke(main, ["archive", "--extract", str(tmp_path / "broken.zip"), "--into", str(repository)])
    assert broken.exit_code != 0 and "broken.zip" in broken.output
