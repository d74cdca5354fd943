"""A small HTTP/1.1 keep-alive client on asyncio streams, for ``servekit bench``.

Why not httpx: a load generator must cost the client far less than the server it measures.
On a 2-core machine httpx spent about 2 ms of client CPU per request (~450 req/s from one
client, against ~1,100 from this client on the same server), which would have measured the
client and made every REST-against-gRPC comparison meaningless.

It does only what a bench needs: send a prebuilt request (bytes), read the status line,
the headers and a body framed by Content-Length, chunked encoding or the end of the
connection. Connections are kept alive and reused, at most ``size`` of them at once; a
request waiting for a free connection is waiting in the client, and its latency shows it.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["ConnectionPool", "HttpAnswer", "build_request"]

@dataclass(frozen=True, slots=True)
class HttpAnswer:
    status: int
    body: bytes


def build_request(method: str, url: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    """The bytes of one request to ``url``'s server (keep-alive)."""
    parts = urlsplit(url)
    lines = [f"{method} {path} HTTP/1.1", f"Host: {parts.netloc}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.reusable = True

    async def exchange(self, request: bytes) -> HttpAnswer:
        self.writer.write(request)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionResetError("the server closed the connection")
        try:
            status = int(status_line.split(b" ", 2)[1])
        except (IndexError, ValueError):
            raise ConnectionError(f"not an HTTP/1.1 answer: {status_line[:80]!r}") from None
        length: int | None = None
        chunked = False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"connection" and b"close" in value.lower():
                self.reusable = False
        if chunked:
            body = await self._chunks()
        elif length is not None:
            body = await self.reader.readexactly(length)
        else:
            body, self.reusable = await self.reader.read(), False
        return HttpAnswer(status, body)

    async def _chunks(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size = int((await self.reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while (await self.reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            parts.append(await self.reader.readexactly(size))
            await self.reader.readexactly(2)

    def close(self) -> None:
        self.reusable = False
        self.writer.close()


class ConnectionPool:
    """Up to ``size`` keep-alive connections to the server of ``url`` (http or https)."""

    def __init__(self, url: str, size: int, timeout_s: float) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url!r}: expected http://HOST:PORT or https://HOST:PORT")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl = ssl.create_default_context() if parts.scheme == "https" else None
        self._timeout_s = timeout_s
        self._slots = asyncio.Semaphore(size)
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()

    async def send(self, request: bytes) -> HttpAnswer:
        """Send on a free connection (waiting for one if all are busy); TimeoutError past the timeout."""
        async with asyncio.timeout(self._timeout_s), self._slots:
            connection = self._idle.pop() if self._idle else await self._connect()
            try:
                answer = await connection.exchange(request)
            except BaseException:
                connection.close()
                self._open.discard(connection)
                raise
            if connection.reusable:
                self._idle.append(connection)
            else:
                connection.close()
                self._open.discard(connection)
            return answer

    async def _connect(self) -> _Connection:
        reader, writer = await asyncio.open_connection(self._host, self._port, ssl=self._ssl)
        connection = _Connection(reader, writer)
        self._open.add(connection)
        return connection

    async def aclose(self) -> None:
        for connection in self._open:
            connection.close()
        self._open.clear()
        self._idle.clear()
