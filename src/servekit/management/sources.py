"""Where the management API may take an archive from: the model store, allowed folders, allowed URLs.

An allowlist pattern is a URL: ``https://models.example.com/releases/`` (a prefix: that scheme
and host exactly, paths below that folder), ``https://*.example.com/*.zip`` (a glob: the host
and the path each matched on their own, so ``*`` never reaches from the host into the path),
or ``file:///srv/archives/`` (a folder, or a glob of paths, on this machine). Without
patterns only archives inside the model store may be registered.
"""

from __future__ import annotations

import fnmatch
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import IO
from urllib.parse import unquote, urlsplit, urlunsplit

from servekit.errors import InvalidInput, ModelNotFound, PayloadTooLarge, PermissionDenied
from servekit.types import is_decimal

__all__ = ["download", "is_remote", "locate_local", "public_url", "url_allowed"]

_GLOB = frozenset("*?[")
_CHUNK = 1024 * 1024
SOCKET_TIMEOUT_S = 30.0
DOWNLOAD_DEADLINE_S = 600.0


def is_remote(url: str) -> bool:
    return urlsplit(url).scheme.lower() in ("http", "https")


def public_url(url: str) -> str:
    """The URL without credentials, query or fragment (which may hold signatures): safe to log and echo."""
    parts = urlsplit(url)
    if not parts.scheme:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _has_glob(text: str) -> bool:
    return any(c in _GLOB for c in text)


def _path_under(path: str, prefix: str) -> bool:
    if prefix in ("", "/"):
        return True
    if prefix.endswith("/"):
        return path.startswith(prefix)
    return path == prefix or path.startswith(prefix + "/")


def _http_matches(url: str, pattern: str) -> bool:
    target, allowed = urlsplit(url), urlsplit(pattern)
    if target.scheme.lower() != allowed.scheme.lower() or target.username or target.password:
        return False
    host, allowed_host = target.netloc.lower(), allowed.netloc.lower()
    if not (fnmatch.fnmatchcase(host, allowed_host) if _has_glob(allowed_host) else host == allowed_host):
        return False
    if _has_glob(allowed.path):
        return fnmatch.fnmatchcase(target.path, allowed.path)
    return _path_under(target.path, allowed.path)


def url_allowed(url: str, patterns: Sequence[str]) -> bool:
    """Whether an http(s) URL matches one of the allowlist's http(s) patterns (False for '..' paths)."""
    if not is_remote(url):
        return False
    segments = unquote(urlsplit(url).path).split("/")
    if any(segment in (".", "..") for segment in segments) or "\\" in unquote(url):
        return False
    return any(is_remote(pattern) and _http_matches(url, pattern) for pattern in patterns)


def _folder_allowed(path: Path, patterns: Sequence[str]) -> bool:
    for pattern in patterns:
        parts = urlsplit(pattern)
        if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
            continue
        allowed = unquote(parts.path)
        if _has_glob(allowed):
            if fnmatch.fnmatchcase(str(path), allowed):
                return True
        elif path.is_relative_to(Path(allowed).resolve()):
            return True
    return False


def locate_local(spec: str, store: Path, patterns: Sequence[str]) -> Path:
    """The archive a local ``spec`` names: a path relative to the model store, an absolute path
    or a file:// URL; a file, or a folder (TorchServe's ``no-archive`` format). It must lie
    (links resolved) inside the store or an allowed folder; ModelNotFound (404, TorchServe's
    message) when there is nothing there."""
    if "\0" in spec:
        raise InvalidInput("the archive path holds a NUL character")
    parts = urlsplit(spec)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise InvalidInput(f"file URL {spec!r} names another host")
        raw = unquote(parts.path)
    elif parts.scheme and len(parts.scheme) > 1:
        raise InvalidInput(f"archive URL scheme {parts.scheme!r} is not supported: use https://, http://, file:// "
                           "or a path in the model store")
    else:
        raw = spec
    candidate = Path(raw) if Path(raw).is_absolute() else store / raw
    resolved = candidate.resolve()
    if not (resolved.is_relative_to(store.resolve()) or _folder_allowed(resolved, patterns)):
        raise PermissionDenied(f"archive {raw!r} is outside the model store {store} and the allowed folders "
                               "(--allowed-url file:///FOLDER/)")
    if not resolved.exists():
        raise ModelNotFound(f"Model not found at: {spec}")
    if not (resolved.is_file() or resolved.is_dir()):
        raise InvalidInput(f"archive {raw!r} is neither a file nor a folder")
    return resolved


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only to a URL the allowlist allows too."""

    def __init__(self, patterns: Sequence[str]) -> None:
        self._patterns = patterns

    def redirect_request(self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str,
                         headers: object, newurl: str) -> urllib.request.Request | None:
        if not url_allowed(newurl, self._patterns):
            raise PermissionDenied(f"the archive URL redirects to {public_url(newurl)}, which is not allowed")
        return super().redirect_request(req, fp, code, msg, headers, newurl)  # type: ignore[arg-type]


def download(url: str, destination: Path, patterns: Sequence[str], max_bytes: int,
             timeout_s: float = SOCKET_TIMEOUT_S, deadline_s: float = DOWNLOAD_DEADLINE_S) -> None:
    """Fetch an allowed http(s) URL into ``destination`` (a new file), at most ``max_bytes``,
    within ``deadline_s`` in all. Blocking: call from a worker thread."""
    shown = public_url(url)
    if not url_allowed(url, patterns):
        raise PermissionDenied(f"archive URL {shown} is not allowed: it matches no --allowed-url pattern"
                               if patterns else
                               f"archive URL {shown} is not allowed: this server registers local archives only "
                               "(allow URLs with --allowed-url)")
    opener = urllib.request.build_opener(_CheckedRedirects(patterns))
    request = urllib.request.Request(url, headers={"User-Agent": "servekit", "Accept-Encoding": "identity"})
    started = time.monotonic()
    try:
        with opener.open(request, timeout=timeout_s) as response:
            declared = response.headers.get("Content-Length")
            if declared is not None and is_decimal(declared) and int(declared) > max_bytes:
                raise PayloadTooLarge(f"archive {shown} is {declared} bytes, over the limit of {max_bytes} bytes")
            descriptor = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "wb") as out:
                size = 0
                while chunk := response.read(_CHUNK):
                    size += len(chunk)
                    if size > max_bytes:
                        raise PayloadTooLarge(f"archive {shown} is over the limit of {max_bytes} bytes")
                    if time.monotonic() - started > deadline_s:
                        raise InvalidInput(f"download of {shown} took longer than {deadline_s:.0f} s")
                    out.write(chunk)
    except BaseException as exc:
        destination.unlink(missing_ok=True)  # never leave part of a download behind
        if isinstance(exc, urllib.error.HTTPError):
            raise InvalidInput(f"download of {shown} failed: HTTP {exc.code} {exc.reason}") from None
        if isinstance(exc, urllib.error.URLError):
            raise InvalidInput(f"download of {shown} failed: {exc.reason}") from None
        if isinstance(exc, OSError):
            raise InvalidInput(f"download of {shown} failed: {exc}") from None
        raise
