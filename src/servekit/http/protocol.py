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

The protocol only wraps the transport in ``connection_made``; everything else is uvicorn's.
``tests/http/test_protocol.py`` checks it against the installed uvicorn (keep-alive,
``Connection: close``, large bodies). httptools comes with uvicorn's ``standard`` extra, which
servekit depends on.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["CoalescingHttpToolsProtocol", "CoalescingTransport", "http_protocol"]


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
    """uvicorn's httptools protocol over a ``CoalescingTransport``."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]


def http_protocol() -> str:
    """What to pass as ``uvicorn.run(http=...)``: an import string (worker processes must be
    able to import it) naming ``CoalescingHttpToolsProtocol``."""
    return f"{__name__}:{CoalescingHttpToolsProtocol.__name__}"
