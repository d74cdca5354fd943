from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from servekit.errors import InvalidInput, ModelNotFound, PayloadTooLarge, PermissionDenied
from servekit.management.sources import download, locate_local, public_url, url_allowed


def test_prefix_patterns_match_scheme_host_and_folder_exactly() -> None:
    allowed = ["https://models.example.com/releases/"]
    assert url_allowed("https://models.example.com/releases/lin-2.zip", allowed)
    assert url_allowed("https://MODELS.example.com/releases/a/b.zip?sig=1", allowed)
    for refused in [
        "http://models.example.com/releases/lin-2.zip",  # another scheme
        "https://models.example.com.evil.org/releases/lin-2.zip",  # another host
        "https://models.example.com:8443/releases/lin-2.zip",  # another port
        "https://models.example.com/releases-old/lin-2.zip",  # a sibling folder
        "https://models.example.com/releases/../secrets/key.zip",  # climbing out
        "https://models.example.com/releases/%2e%2e/secrets/key.zip",
        "https://user:pw@models.example.com/releases/lin-2.zip",  # credentials in the URL
        "file:///etc/passwd",
    ]:
        assert not url_allowed(refused, allowed), refused
    assert not url_allowed("https://models.example.com/releases/lin-2.zip", [])


def test_glob_patterns_match_host_and_path_separately() -> None:
    allowed = ["https://*.example.com/*.zip"]
    assert url_allowed("https://cdn.example.com/a/lin.zip", allowed)
    assert not url_allowed("https://evil.org/x.example.com/lin.zip", allowed)
    assert not url_allowed("https://cdn.example.com/lin.tar", allowed)


def test_public_url_drops_credentials_and_query() -> None:
    assert public_url("https://u:p@host:9/a/b.zip?X-Signature=s#f") == "https://host:9/a/b.zip"


def test_local_archives_come_from_the_store_or_an_allowed_folder(tmp_path: Path) -> None:
    store, shelf, elsewhere = tmp_path / "store", tmp_path / "shelf", tmp_path / "elsewhere"
    for folder in (store, shelf, elsewhere):
        folder.mkdir()
        (folder / "a.zip").write_bytes(b"zip")
    assert locate_local("a.zip", store, []) == (store / "a.zip").resolve()
    assert locate_local(str(store / "a.zip"), store, []) == (store / "a.zip").resolve()
    with pytest.raises(PermissionDenied, match="outside the model store"):
        locate_local("../elsewhere/a.zip", store, [])
    with pytest.raises(PermissionDenied, match="outside the model store"):
        locate_local(str(shelf / "a.zip"), store, [])
    assert locate_local(f"file://{shelf}/a.zip", store, [f"file://{shelf}/"]) == (shelf / "a.zip").resolve()
    (store / "sneaky.zip").symlink_to(elsewhere / "a.zip")
    with pytest.raises(PermissionDenied):
        locate_local("sneaky.zip", store, [])
    with pytest.raises(ModelNotFound, match=r"^Model not found at: missing\.zip$"):  # TorchServe's 404
        locate_local("missing.zip", store, [])
    (store / "folder").mkdir()  # TorchServe's no-archive format is a folder
    assert locate_local("folder", store, []) == (store / "folder").resolve()
    with pytest.raises(InvalidInput, match="scheme 'ftp' is not supported"):
        locate_local("ftp://host/a.zip", store, [])


class _Handler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/moved.zip":
            self.send_response(302)
            self.send_header("Location", "http://localhost:1/elsewhere.zip")
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def web(tmp_path: Path) -> Iterator[str]:
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "lin.zip").write_bytes(b"z" * 5000)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_download_an_allowed_url_within_the_limits(web: str, tmp_path: Path) -> None:
    allowed = [f"{web}/"]
    download(f"{web}/lin.zip", tmp_path / "got.zip", allowed, max_bytes=10_000)
    assert (tmp_path / "got.zip").read_bytes() == b"z" * 5000
    with pytest.raises(PermissionDenied, match="registers local archives only"):
        download(f"{web}/lin.zip", tmp_path / "a", [], max_bytes=10_000)
    with pytest.raises(PermissionDenied, match="matches no --allowed-url"):
        download(f"{web}/lin.zip", tmp_path / "b", ["https://elsewhere.example.com/"], max_bytes=10_000)
    with pytest.raises(PayloadTooLarge, match="over the limit of 1024 bytes"):
        download(f"{web}/lin.zip", tmp_path / "c", allowed, max_bytes=1024)
    with pytest.raises(InvalidInput, match="HTTP 404"):
        download(f"{web}/missing.zip", tmp_path / "d", allowed, max_bytes=10_000)
    with pytest.raises(PermissionDenied, match=r"redirects to http://localhost:1/elsewhere\.zip"):
        download(f"{web}/moved.zip", tmp_path / "e", allowed, max_bytes=10_000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["got.zip", "site"]
