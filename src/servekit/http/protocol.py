"""uvicorn's httptools protocol, writing each response with one socket write instead of two.

Why this leans on uvicorn internals: uvicorn writes the status line and headers as soon as
the app sends ``http.response.start`` and the body on ``http.response.body``: two
``transport.write`` calls, so two ``send`` system calls and two TCP segments per response.
For the tiny-model workload these two lines were the largest single cost of the event loop
after the FastAPI fast path (20-27 % of its samples, benchmarks/results/hot_path.md), and
coalescing them raised req/s at 32 connections by 30-50 % in a side-by-side run. ASGI has
no message that carries headers and body together, so the coalescing happens under the
protocol: ``CoalescingTransport`` holds what is written during one event-loop turn and
writes it at the end of that turn (``call_soon``), as one buffer. Order is kept, nothing is
held past the turn, and ``close`` writes what is held first.

Two more guards uvicorn lacks, both on the way a request is read:

- a request line without an HTTP version (``GET /path`` then headers, which the parser takes
  for HTTP/0.9) is refused with 400, as is any version other than 1.0 and 1.1;
- ``read_timeout_s``: a request must arrive whole (line, headers and body) within that many
  seconds of its first byte, or of the connection opening; a slow or stalled client then gets
  408 and its connection is closed, so it cannot hold a connection slot for ever. Between
  requests, uvicorn's keep-alive timeout applies.

And one change to the drain: uvicorn closes a connection with no request in progress the moment
it stops accepting, so a request already on its way (sent by the client, not yet read by the
server) is cut off unanswered. Here such a connection lingers ``drain_idle_grace_s`` (2 s): a
request that arrives meanwhile is served (with ``Connection: close``), and the connection closes
after it, or at the end of the grace when none came.

The protocol wraps the transport in ``connection_made`` and adds these checks; everything
else is uvicorn's. ``tests/http/test_protocol.py`` checks it against the installed uvicorn
(keep-alive, ``Connection: close``, large bodies, both guards). httptools comes with uvicorn's
``standard`` extra, which servekit depends on.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["IDLE_GRACE_ENV", "READ_TIMEOUT_ENV", "CoalescingHttpToolsProtocol", "CoalescingTransport",
           "http_protocol"]

# Where each worker reads the read timeout (uvicorn builds protocols with its own arguments only).
READ_TIMEOUT_ENV = "SERVEKIT_READ_TIMEOUT"  # servekit.config.environment_variable("read_timeout_s")
_DEFAULT_READ_TIMEOUT_S = 30.0
IDLE_GRACE_ENV = "SERVEKIT_DRAIN_IDLE_GRACE"  # ... ("drain_idle_grace_s")
_DEFAULT_IDLE_GRACE_S = 2.0
_VERSIONS = frozenset({"1.0", "1.1"})
_TIMEOUT_BODY = b'{"error":"the request did not arrive whole in time"}'
_REQUEST_TIMEOUT = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\ncontent-length: "
                    + str(len(_TIMEOUT_BODY)).encode() + b"\r\nconnection: close\r\n\r\n" + _TIMEOUT_BODY)


class UnsupportedVersion(Exception):
    """Raised in a parser callback: the parser reports it as a bad request (uvicorn answers 400)."""


def _seconds(variable: str, default: float) -> float | None:
    """Seconds from ``variable`` (set by ``servekit serve`` for its workers), None when 0."""
    text = os.environ.get(variable)
    value = default if text is None else float(text)
    return value if value > 0 else None


class CoalescingTransport:
    """A transport proxy that turns the writes of one event-loop turn into one write."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._held:
            self._loop.call_soon(self.flush)
        self._held.append(data)

    def flush(self) -> None:
        held = self._held
        if not held:
            return
        self._held = []
        if not self._transport.is_closing():
            self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:  # everything else is the transport's
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over a ``CoalescingTransport``, with the two guards of the
    module docstring."""

    _read_timer: asyncio.TimerHandle | None = None
    _read_timeout_s: float | None = None
    _idle_grace_s: float | None = None
    _draining = False
    _linger: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
        self._read_timeout_s = _seconds(READ_TIMEOUT_ENV, _DEFAULT_READ_TIMEOUT_S)
        self._idle_grace_s = _seconds(IDLE_GRACE_ENV, _DEFAULT_IDLE_GRACE_S)
        self._arm_read_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_read_timer()
        if self._linger is not None:
            self._linger.cancel()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_read_timer()
        if self._linger is not None:  # a request came in the drain's grace: it is served, then we close
            self._linger.cancel()
            self._linger = None

    def on_headers_complete(self) -> None:
        version = self.parser.get_http_version()
        if version not in _VERSIONS:
            raise UnsupportedVersion(f"HTTP version {version!r}")
        super().on_headers_complete()
        if self._draining and self.cycle is not None:
            self.cycle.keep_alive = False

    def shutdown(self) -> None:
        """The drain: a connection with a request in progress closes after its answer (uvicorn's
        way); an idle one lingers the idle grace for a request already on its way."""
        self._draining = True
        if (self.cycle is None or self.cycle.response_complete) and self._idle_grace_s is not None:
            if self._linger is None and not self.transport.is_closing():
                self._linger = self.loop.call_later(self._idle_grace_s, self._close_if_idle)
            return
        super().shutdown()

    def _close_if_idle(self) -> None:
        self._linger = None
        if self.cycle is None or self.cycle.response_complete:
            self.transport.close()

    def on_message_complete(self) -> None:
        self._disarm_read_timer()
        super().on_message_complete()

    def _arm_read_timer(self) -> None:
        if self._read_timeout_s is not None and self._read_timer is None:
            self._read_timer = self.loop.call_later(self._read_timeout_s, self._read_timed_out)

    def _disarm_read_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _read_timed_out(self) -> None:
        """The request did not arrive whole in time: 408 (unless an answer has begun), then close."""
        self._read_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is None or not self.cycle.response_started:
            self.transport.write(_REQUEST_TIMEOUT)
        self.transport.close()


def http_protocol() -> str:
    """What to pass as ``uvicorn.run(http=...)``: an import string (worker processes must be
    able to import it) naming ``CoalescingHttpToolsProtocol``."""
    return f"{__name__}:{CoalescingHttpToolsProtocol.__name__}"
