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

And the hot routes (POST ``/v2/models/{m}/infer``, ``/predict``: ``servekit.http.hot_routes``)
skip ASGI: once such a request's headers are in, the protocol gathers its body itself, hands
headers and body to ``HotRoutes.answer`` in a task and writes the answer's status line, headers
and body as one buffer. uvicorn's request cycle, its ASGI ``send`` (which checks every header
and writes twice) and the app's dispatch cost more Python per request than the rest of the
HTTP path: a no-op answer took 31-40 us of server CPU through them against 16-17 us this way
(wrk, 32 connections, this machine). Only the plain case takes this path: a POST with a
Content-Length within ``max_request_bytes``, no ``Expect`` or ``Transfer-Encoding``, no
percent-escapes in the path, no request already in progress on the connection (so pipelined
answers keep their order), tracing off and the connection limit not reached; anything else goes through
uvicorn and the ASGI app as before, which answer the same. Keep-alive, ``Connection: close``,
the drain and the connection's tasks (which uvicorn's shutdown waits for) work as for any request.

The protocol wraps the transport in ``connection_made`` and adds these checks; everything
else is uvicorn's. ``tests/http/test_protocol.py`` checks it against the installed uvicorn
(keep-alive, ``Connection: close``, large bodies, both guards). httptools comes with uvicorn's
``standard`` extra, which servekit depends on.
"""

from __future__ import annotations

import asyncio
import os
from http import HTTPStatus
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from servekit.http.hot_routes import HotRoute, HotRoutes, match_hot_path
from servekit.observability import request_ids, tracing

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


class _NoEvent:
    """Stands in for a request cycle's message event: a hot request has its whole body already."""

    def set(self) -> None:
        pass


class _HotCycle:
    """What uvicorn's protocol reads and writes of ``self.cycle`` while a hot request is answered."""

    __slots__ = ("disconnected", "keep_alive", "response_complete", "response_started")
    message_event = _NoEvent()

    def __init__(self, keep_alive: bool) -> None:
        self.keep_alive = keep_alive
        self.disconnected = False
        self.response_started = False
        self.response_complete = False


class _HotRequest:
    __slots__ = ("body", "cycle", "headers", "path", "route")

    def __init__(self, path: str, route: HotRoute, headers: dict[str, str], cycle: _HotCycle) -> None:
        self.path = path
        self.route = route
        self.headers = headers
        self.cycle = cycle
        self.body: list[bytes] = []


_STATUS_LINES: dict[int, bytes] = {}


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        line = _STATUS_LINES[status] = b"HTTP/1.1 %d %s\r\n" % (status, HTTPStatus(status).phrase.encode("latin-1"))
    return line


def _hot_routes_of(app: Any) -> HotRoutes | None:
    """The app's hot routes (servekit's app: ``hot_routes()``), through uvicorn's wrappers; None for another app."""
    for _ in range(8):
        if app is None:
            return None
        routes = getattr(app, "hot_routes", None)
        if callable(routes):
            found = routes()
            return found if isinstance(found, HotRoutes) else None
        app = getattr(app, "app", None)
    return None


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over a ``CoalescingTransport``, with the two guards and the
    hot routes' own path of the module docstring."""

    _read_timer: asyncio.TimerHandle | None = None
    _read_timeout_s: float | None = None
    _idle_grace_s: float | None = None
    _draining = False
    _linger: asyncio.TimerHandle | None = None
    _routes: HotRoutes | None = None
    _hot: _HotRequest | None = None  # a hot request whose body is being read

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
        self._read_timeout_s = _seconds(READ_TIMEOUT_ENV, _DEFAULT_READ_TIMEOUT_S)
        self._idle_grace_s = _seconds(IDLE_GRACE_ENV, _DEFAULT_IDLE_GRACE_S)
        self._routes = _hot_routes_of(self.app)
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
        if self._routes is not None and self._take_hot(version):
            return
        super().on_headers_complete()
        if self._draining and self.cycle is not None:
            self.cycle.keep_alive = False

    def _take_hot(self, version: str) -> bool:
        """Start reading a hot request on the protocol's own path, when it is the plain case (see
        the module docstring); False leaves it to uvicorn."""
        if self.parser.get_method() != b"POST" or tracing.tracer is not None:
            return False
        limit = self.limit_concurrency  # at the limit uvicorn answers 503
        if limit is not None and (len(self.connections) >= limit or len(self.tasks) >= limit):
            return False
        if (self.cycle is not None and not self.cycle.response_complete) or self.expect_100_continue:
            return False
        path = self.url.partition(b"?")[0]
        if b"%" in path or self.root_path:
            return False
        text = path.decode("latin-1")
        route = match_hot_path(text)
        if route is None:
            return False
        headers: dict[str, str] = {}
        for name, value in self.headers:
            key = name.decode("latin-1")
            if key not in headers:
                headers[key] = value.decode("latin-1")
        length = headers.get("content-length")
        assert self._routes is not None
        if (length is None or not length.isdigit() or int(length) > self._routes.limits.max_bytes
                or "transfer-encoding" in headers or "upgrade" in headers):
            return False
        keep_alive = version != "1.0" and self.parser.should_keep_alive() and not self._draining
        cycle = _HotCycle(keep_alive)
        self.cycle = cycle  # type: ignore[assignment]  # what uvicorn checks: a request is in progress
        self._hot = _HotRequest(text, route, headers, cycle)
        return True

    def on_body(self, body: bytes) -> None:
        if self._hot is not None:
            self._hot.body.append(body)
            return
        super().on_body(body)

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
        hot = self._hot
        if hot is None:
            super().on_message_complete()
            return
        self._hot = None
        task = self.loop.create_task(self._answer_hot(hot))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)  # uvicorn's shutdown waits for these

    async def _answer_hot(self, hot: _HotRequest) -> None:
        """Answer a hot request read whole; then what uvicorn does after any response."""
        assert self._routes is not None
        body = hot.body[0] if len(hot.body) == 1 else b"".join(hot.body)
        token = request_ids.bind(hot.headers.get(request_ids.HEADER))
        try:
            answer = await self._routes.answer(hot.route, hot.headers, _whole(body), hot.path)
        finally:
            request_ids.reset(token)
        cycle = hot.cycle
        cycle.response_started = True
        if answer is None or cycle.disconnected or self.transport.is_closing():
            cycle.response_complete = True
            return
        status, headers, content = answer
        parts = [_status_line(status)]
        for name, value in self.server_state.default_headers:
            parts += (name, b": ", value, b"\r\n")
        for name, value in headers:
            parts += (name, b": ", value, b"\r\n")
        if not cycle.keep_alive:
            parts.append(b"connection: close\r\n")
        parts += (b"\r\n", content)
        self.transport.write(b"".join(parts))
        cycle.response_complete = True
        if not cycle.keep_alive:
            self.transport.close()
        self.on_response_complete()

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


def _whole(body: bytes) -> Any:
    """An ASGI ``receive`` giving ``body`` in one message."""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def http_protocol() -> str:
    """What to pass as ``uvicorn.run(http=...)``: an import string (worker processes must be
    able to import it) naming ``CoalescingHttpToolsProtocol``."""
    return f"{__name__}:{CoalescingHttpToolsProtocol.__name__}"
