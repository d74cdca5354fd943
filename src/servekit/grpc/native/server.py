"""The native gRPC front end (``--grpc-frontend native``): unary calls over nghttp2, on servekit's event loop.

grpcio's asyncio server costs more per call than servekit's whole inference path (its no-op
ceiling on a 2-core machine is about 3k calls/s at 32 connections, see
``benchmarks/results/grpc_frontends.md``). This front end keeps the sockets, TLS and the calls on
the event loop that serves HTTP, and leaves HTTP/2 itself (framing, HPACK, flow control, SETTINGS,
PING, GOAWAY) to nghttp2 through a small C extension (``_h2.c``, built at install when
libnghttp2's headers are present). Python sees whole calls: a path, the metadata and the message.

It serves the same servicers as the grpcio server (``InferenceServicer``, ``ModelServicer``, both
Health services, server reflection) through the same descriptors, with the same error mapping (a
ServekitError ends a call with its ``grpc_code`` and message, anything else is logged and answered
INTERNAL), request ids in the trailing metadata, ``grpc-timeout`` as the deadline, and tracing
spans. Unary calls arrive whole; streaming ones (ModelStreamInfer, PredictStream, PredictBidi,
Health/Watch, reflection) arrive as they are sent, each request message handed to the servicer
as soon as it is complete, each answer sent as soon as it is made. Requests compressed with gzip
or deflate are read (answers go uncompressed, which the spec allows); another ``grpc-encoding``
gets UNIMPLEMENTED, as the spec asks.

Drain: ``begin_stop`` closes the listening socket and sends every connection a graceful GOAWAY.
Calls already on their way are still taken for ``drain_idle_grace_s``; then each connection gets
the final GOAWAY and closes once its calls are answered. Whatever is left after
``drain_timeout_s`` is cancelled and its connection closed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import socket
import ssl
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import quote

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2
from grpc_reflection.v1alpha._async import ReflectionServicer  # reflection's asyncio servicer (grpc.aio's own)

from servekit.config import ServerSettings
from servekit.errors import ServekitError
from servekit.grpc.health import HealthServicer, ModelHealthServicer
from servekit.grpc.inference import InferenceServicer
from servekit.grpc.model_service import ModelServicer
from servekit.grpc.native import _h2  # type: ignore[attr-defined]  # the C extension
from servekit.grpc.pool import POOL
from servekit.grpc.rpc import Parse, request_parser, serialize
from servekit.grpc.server import add_to_reflection_pool
from servekit.observability import request_ids, tracing
from servekit.serving.dataplane import DataPlane
from servekit.serving.simple import SimpleAPI
from servekit.tls import tls_files

__all__ = ["NativeGrpcServer"]

log = logging.getLogger("servekit.grpc")

# grpc-timeout units: seconds = digits * multiplier / divisor
_TIMEOUT_UNITS = {"H": (3600, 1), "M": (60, 1), "S": (1, 1), "m": (1, 10**3), "u": (1, 10**6), "n": (1, 10**9)}
_OK_TRAILER = (b"grpc-status", b"0")

class CallContext:
    """What a servicer method reads of its call: the deadline and the metadata (grpc.aio's names)."""

    __slots__ = ("_deadline", "_metadata")

    def __init__(self, metadata: tuple[tuple[str, str | bytes], ...], deadline: float | None) -> None:
        self._metadata = metadata
        self._deadline = deadline

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    def invocation_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return self._metadata


class _Method:
    __slots__ = ("behaviour", "client_streaming", "parse", "path", "server_streaming")

    def __init__(self, path: str, behaviour: Any, parse: Parse, client_streaming: bool,
                 server_streaming: bool) -> None:
        self.path, self.behaviour, self.parse = path, behaviour, parse
        self.client_streaming, self.server_streaming = client_streaming, server_streaming


def _methods(servicers: list[tuple[ServiceDescriptor, object]]) -> dict[bytes, _Method]:
    table: dict[bytes, _Method] = {}
    for service, servicer in servicers:
        for method in service.methods:
            path = f"/{service.full_name}/{method.name}"
            parse = request_parser(message_factory.GetMessageClass(method.input_type), method.input_type.full_name)
            table[path.encode()] = _Method(path, getattr(servicer, method.name), parse, method.client_streaming,
                                           method.server_streaming)
    return table


class _Incoming:
    """A streaming call's request messages, cut out of its DATA as it arrives (gRPC's 5-byte framing).

    Flow control: the DATA received is credited back to the client (``credit``, HTTP/2's window)
    while fewer than ``AHEAD`` whole messages wait for the servicer; past that the credit waits
    until the servicer takes one, so a client cannot run further ahead than its window."""

    AHEAD = 4

    def __init__(self, max_message_bytes: int, credit: Callable[[int], None], wbits: int | None = None) -> None:
        self._limit = max_message_bytes
        self._wbits = wbits
        self._credit = credit
        self._owed = 0
        self._buffer = bytearray()
        self._messages: asyncio.Queue[bytes | ServekitError | None] = asyncio.Queue()
        self._ended = False

    def receive(self, chunk: bytes, end: bool) -> None:
        self._owed += len(chunk)
        self._settle()
        if self._ended:
            return
        self._buffer += chunk
        while len(self._buffer) >= 5:
            if self._buffer[0] > 1:
                self._fail(_Refused("INTERNAL", "a message with an unknown flag byte"))
                return
            length = int.from_bytes(self._buffer[1:5], "big")
            if length > self._limit:
                self._fail(_Refused("RESOURCE_EXHAUSTED", f"received message larger than max ({self._limit} bytes)"))
                return
            if len(self._buffer) < 5 + length:
                break
            message = bytes(self._buffer[5:5 + length])
            if self._buffer[0] == 1:
                try:
                    message = _decompressed(message, self._wbits, self._limit)
                except ServekitError as error:
                    self._fail(error)
                    return
            self._messages.put_nowait(message)
            del self._buffer[:5 + length]
        if end:
            if self._buffer:
                self._fail(_Refused("INTERNAL", "the request stream ended inside a message"))
                return
            self._ended = True
            self._messages.put_nowait(None)

    def _settle(self) -> None:
        if self._owed and (self._ended or self._messages.qsize() < self.AHEAD):
            self._credit(self._owed)
            self._owed = 0

    def _fail(self, error: ServekitError) -> None:
        self._ended = True
        self._buffer.clear()
        self._messages.put_nowait(error)

    async def next(self) -> bytes | None:
        """The next message, None once the client has half-closed; raises what broke the stream."""
        item = await self._messages.get()
        self._settle()
        if isinstance(item, ServekitError):
            self._messages.put_nowait(item)  # every later read fails the same way
            raise item
        if item is None:
            self._messages.put_nowait(None)
        return item


class _Refused(ServekitError):
    """A request stream servekit cannot read, with the status the gRPC spec gives it."""

    def __init__(self, grpc_code: str, message: str) -> None:
        super().__init__(message)
        self.grpc_code = grpc_code


def _timeout(value: bytes) -> float | None:
    """``grpc-timeout`` (up to 8 digits and a unit) in seconds, or None when it is malformed."""
    unit = _TIMEOUT_UNITS.get(chr(value[-1])) if value else None
    digits = value[:-1]
    if unit is None or not digits.isdigit() or len(digits) > 8:
        return None
    return int(digits) * unit[0] / unit[1]


# grpc-encoding -> zlib's wbits: gzip's header, or zlib's (gRPC's "deflate" is RFC 1950).
_ENCODINGS = {b"gzip": 16 + zlib.MAX_WBITS, b"deflate": zlib.MAX_WBITS}


def _decompressed(data: bytes | memoryview, wbits: int | None, limit: int) -> bytes:
    """A compressed message's bytes, at most ``limit`` of them (a small message that inflates past the
    limit is refused as a large one is)."""
    if wbits is None:
        raise _Refused("INTERNAL", "a compressed message without grpc-encoding")
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error:
        raise _Refused("INTERNAL", "a compressed message that does not decompress") from None
    if len(out) > limit:
        raise _Refused("RESOURCE_EXHAUSTED", f"received message larger than max ({limit} bytes) once decompressed")
    if not inflater.eof:
        raise _Refused("INTERNAL", "a compressed message that ends early")
    return out


def _unbase64(value: bytes) -> bytes:
    try:
        return base64.b64decode(value + b"=" * (-len(value) % 4))
    except ValueError:
        return value


def _grpc_message(text: str) -> bytes:
    """``grpc-message`` as the spec writes it: UTF-8, percent-encoded outside printable ASCII and '%'."""
    return quote(text, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~", encoding="utf-8").encode("ascii")


def _status_number(code: str) -> int:
    """A gRPC status code's number from its name (the error table's ``grpc_code``)."""
    return int(grpc.StatusCode[code].value[0])


def _error_trailers(code: str, message: str, request_id: str | None,
                    headers: dict[str, str] | None = None) -> list[tuple[bytes, bytes]]:
    trailers = [(b"grpc-status", str(_status_number(code)).encode()), (b"grpc-message", _grpc_message(message))]
    if request_id is not None:
        trailers.append((request_ids.HEADER.encode(), request_id.encode("latin-1", "replace")))
    for key, value in (headers or {}).items():
        trailers.append((key.lower().encode("latin-1"), value.encode("latin-1", "replace")))
    return trailers


class _Connection(asyncio.Protocol):
    """One client connection: bytes in to the session, whole calls out to tasks, answers back."""

    def __init__(self, server: NativeGrpcServer) -> None:
        self._server = server
        self._session = _h2.Session(server.max_message_bytes, streaming_paths=server.streaming_paths)
        self._transport: asyncio.Transport | None = None
        self._calls: dict[int, asyncio.Task[None]] = {}
        self._incoming: dict[int, _Incoming] = {}  # streaming calls' request messages
        self._flush_due = False
        self._closing = False

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio's classes
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._server.connections.add(self)
        if self._server.stopping:
            self._session.shutdown_notice()
        self._flush()

    def data_received(self, data: bytes) -> None:
        try:
            calls = self._session.feed(data)
        except _h2.H2Error as error:
            log.debug("gRPC connection closed: HTTP/2 protocol error (%s)", error)
            self._flush()
            self._close()
            return
        for stream_id, path, metadata, message in calls:
            if path is None:
                if metadata is None:  # the client reset a stream whose call is running
                    self._incoming.pop(stream_id, None)
                    task = self._calls.pop(stream_id, None)
                    if task is not None:
                        task.cancel()
                else:  # a streaming call's DATA (message: whether the client half-closed)
                    incoming = self._incoming.get(stream_id)
                    if incoming is not None:
                        incoming.receive(metadata, message)
            elif message is True:
                self._open_stream(stream_id, path, metadata)
            else:
                self._start(stream_id, path, metadata, message)
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._server.connections.discard(self)
        for task in self._calls.values():
            task.cancel()
        self._calls.clear()
        self._server.connection_closed()

    # -- calls ---------------------------------------------------------------------------

    def _context(self, stream_id: int,
                 metadata: list[tuple[bytes, bytes]]) -> tuple[CallContext, str | None, int | None] | None:
        """The call's context, incoming request id and message encoding (zlib's ``wbits``, None for
        identity) from its headers; None when the call was refused."""
        deadline, request_id, decoded, wbits = None, None, [], None
        for key, value in metadata:
            if key == b"grpc-timeout":
                seconds = _timeout(value)
                if seconds is not None:
                    deadline = time.monotonic() + seconds
                continue
            if key == b"grpc-encoding" and value != b"identity":
                wbits = _ENCODINGS.get(value)
                if wbits is None:
                    self._answer_error(stream_id, "UNIMPLEMENTED", f"grpc-encoding {value.decode('latin-1')} is not "
                                       "supported (identity, deflate or gzip)", None,
                                       {"grpc-accept-encoding": "identity,deflate,gzip"})
                    return None
                continue
            if key.startswith(b"grpc-") or key in (b"te", b"content-type", b"user-agent"):
                continue
            name = key.decode("latin-1")
            if name == request_ids.HEADER:
                request_id = value.decode("latin-1")
            # -bin values travel base64-encoded (padding optional); servicers get the bytes, as from grpcio
            decoded.append((name, _unbase64(value) if name.endswith("-bin") else value.decode("latin-1")))
        return CallContext(tuple(decoded), deadline), request_id, wbits

    def _method(self, stream_id: int, path: bytes) -> _Method | None:
        method = self._server.methods.get(path)
        if method is None:
            self._answer_error(stream_id, "UNIMPLEMENTED", f"Method not found: {path.decode('latin-1')}", None)
        return method

    def _start(self, stream_id: int, path: bytes, metadata: list[tuple[bytes, bytes]], message: bytes | None) -> None:
        method = self._method(stream_id, path)
        if method is None:
            return
        if message is None:
            self._answer_error(stream_id, "RESOURCE_EXHAUSTED", "received message larger than max "
                               f"({self._server.max_message_bytes} bytes)", None)
            return
        found = self._context(stream_id, metadata)
        if found is None:
            return
        context, request_id, wbits = found
        if len(message) < 5 or message[0] > 1 or int.from_bytes(message[1:5], "big") != len(message) - 5:
            self._answer_error(stream_id, "INTERNAL", "the request body is not exactly one length-prefixed message",
                               None)
            return
        payload: bytes | memoryview = memoryview(message)[5:]
        if message[0] == 1:
            try:
                payload = _decompressed(payload, wbits, self._server.max_message_bytes)
            except ServekitError as error:
                self._answer_error(stream_id, error.grpc_code, error.message, None)
                return
        task = asyncio.get_running_loop().create_task(self._run(
            stream_id, method, context, request_id, lambda: self._answer(stream_id, method, context, payload)))
        self._calls[stream_id] = task

    def _open_stream(self, stream_id: int, path: bytes, metadata: list[tuple[bytes, bytes]]) -> None:
        method = self._method(stream_id, path)
        found = self._context(stream_id, metadata) if method is not None else None
        if method is None or found is None:
            return
        context, request_id, wbits = found
        incoming = _Incoming(self._server.max_message_bytes, lambda taken: self._credit(stream_id, taken), wbits)
        self._incoming[stream_id] = incoming
        task = asyncio.get_running_loop().create_task(self._run(
            stream_id, method, context, request_id, lambda: self._answer(stream_id, method, context, incoming)))
        self._calls[stream_id] = task

    async def _run(self, stream_id: int, method: _Method, context: CallContext, incoming_id: str | None,
                   answer: Callable[[], Awaitable[int]]) -> None:
        """Run one call's ``answer`` (which returns the gRPC status it ended with) under its request id
        and, when tracing is on, a span."""
        token = request_ids.bind(incoming_id)
        try:
            if tracing.tracer is None:
                await answer()
            else:
                with tracing.grpc_span(method.path, context.invocation_metadata()) as span:
                    span.set_attribute("rpc.grpc.status_code", await answer())
        except asyncio.CancelledError:
            pass  # the client reset the stream, or the connection went away: nobody to answer
        finally:
            request_ids.reset(token)
            self._calls.pop(stream_id, None)
            self._incoming.pop(stream_id, None)
            if self._closing:
                self._flush_soon()  # a draining connection closes once its last call is answered

    async def _answer(self, stream_id: int, method: _Method, context: CallContext,
                      request: bytes | memoryview | _Incoming) -> int:
        """Run one call and answer it; returns the gRPC status number it ended with. ``request``: a
        unary call's message, or a streaming call's messages as they arrive."""
        session, started = self._session, False
        try:
            if not isinstance(request, _Incoming):
                argument: Any = method.parse(request)
            elif method.client_streaming:
                argument = _parsed_messages(request, method)
            else:
                raw = await request.next()
                if raw is None or await request.next() is not None:
                    raise _Refused("INTERNAL", f"{method.path} takes exactly one request message")
                argument = method.parse(raw)
            if not method.server_streaming:
                session.respond(stream_id, self._payload(await method.behaviour(argument, context)), _ok_trailers())
                self._flush_soon()
                return 0
            async for response in method.behaviour(argument, context):
                if not started:
                    started = session.start(stream_id)
                    if not started:
                        return _status_number("CANCELLED")  # the stream is gone
                session.send(stream_id, self._payload(response))
                self._flush_soon()
        except asyncio.CancelledError:
            raise
        except Exception as error:
            code, text, headers = _status_of(error)
            trailers = _error_trailers(code, text, request_ids.ensure(), headers)
            if started:
                session.finish(stream_id, trailers)
            else:
                session.respond(stream_id, None, trailers)
            self._flush_soon()
            return _status_number(code)
        if started:
            session.finish(stream_id, _ok_trailers())
        else:
            session.respond(stream_id, None, _ok_trailers())  # no answer at all: trailers only
        self._flush_soon()
        return 0

    def _payload(self, response: Message | bytes) -> bytes:
        """An answer's bytes, refused when past the message limit."""
        payload = serialize(response)
        limit = self._server.max_message_bytes
        if len(payload) > limit:
            raise _Refused("RESOURCE_EXHAUSTED", f"response message of {len(payload)} bytes is larger than the "
                           f"limit ({limit} bytes)")
        return payload

    def _credit(self, stream_id: int, taken: int) -> None:
        self._session.consume(stream_id, taken)
        self._flush_soon()

    def _answer_error(self, stream_id: int, code: str, message: str, request_id: str | None,
                      headers: dict[str, str] | None = None) -> None:
        self._session.respond(stream_id, None, _error_trailers(code, message, request_id, headers))
        self._flush_soon()

    # -- writing -------------------------------------------------------------------------

    def _flush_soon(self) -> None:
        """Write once per loop turn: the answers of one batch leave in one write."""
        if not self._flush_due:
            self._flush_due = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_due = False
        if self._transport is None:
            return
        try:
            data = self._session.data_to_send()
        except _h2.H2Error as error:
            log.debug("gRPC connection closed: %s", error)
            self._close()
            return
        if data:
            self._transport.write(data)
        if not self._session.want_read() and not self._session.want_write():
            self._close()
        elif self._closing and not self._calls:
            self._session.goaway()
            self._transport.write(self._session.data_to_send())
            self._close()

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def shut_down(self, grace_s: float) -> None:
        """Graceful GOAWAY now: calls already on their way are still taken for ``grace_s``; after
        it the final GOAWAY goes out and the connection closes once its calls are answered."""
        self._session.shutdown_notice()
        self._flush()
        asyncio.get_running_loop().call_later(grace_s, self._grace_over)

    def _grace_over(self) -> None:
        self._closing = True
        self._flush()

    def abort(self) -> None:
        for task in self._calls.values():
            task.cancel()
        if self._transport is not None:
            self._transport.abort()


def _ok_trailers() -> tuple[tuple[bytes, bytes], ...]:
    return _OK_TRAILER, (b"x-request-id", request_ids.ensure().encode("latin-1", "replace"))


def _status_of(error: Exception) -> tuple[str, str, dict[str, str] | None]:
    """(gRPC code name, message, extra trailers) that ``error`` ends a call with: the error table."""
    if isinstance(error, ServekitError):
        return error.grpc_code, error.message, error.headers()
    log.error("unexpected error in a gRPC call", exc_info=error)
    return "INTERNAL", "internal server error", None


async def _parsed_messages(incoming: _Incoming, method: _Method) -> AsyncIterator[Message]:
    while (raw := await incoming.next()) is not None:
        yield method.parse(raw)


class NativeGrpcServer:
    """Serves the unary RPCs of servekit's gRPC services on ``settings.host:grpc_port`` over nghttp2.

    The same interface as :class:`servekit.grpc.server.GrpcServer`: ``start``, ``begin_stop``, ``stop``."""

    def __init__(self, plane: DataPlane, simple: SimpleAPI, settings: ServerSettings) -> None:
        self._settings = settings
        self.max_message_bytes = settings.grpc_max_message_bytes
        inference, model = InferenceServicer(plane), ModelServicer(simple)
        names = [inference.service.full_name, model.service.full_name, ModelHealthServicer.service.full_name]
        health = HealthServicer(plane, server_services=names)
        add_to_reflection_pool([health_pb2.DESCRIPTOR, reflection_pb2.DESCRIPTOR])
        reflecting = ReflectionServicer([*names, health.service.full_name, reflection.SERVICE_NAME], pool=POOL)
        self.methods = _methods([(inference.service, inference), (model.service, model),
                                 (health.service, health), (ModelHealthServicer.service, ModelHealthServicer(health)),
                                 (reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"], reflecting)])
        self.streaming_paths = frozenset(path for path, method in self.methods.items()
                                         if method.client_streaming or method.server_streaming)
        self.connections: set[_Connection] = set()
        self.stopping = False
        self._server: asyncio.Server | None = None
        self._stopping: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self.port: int | None = None

    async def start(self) -> int:
        settings = self._settings
        try:
            server = await asyncio.get_running_loop().create_server(
                lambda: _Connection(self), settings.host, settings.grpc_port, ssl=self._tls(),
                reuse_port=settings.workers > 1, backlog=1024,
            )
        except OSError as exc:
            raise OSError(f"cannot serve gRPC on {settings.host}:{settings.grpc_port}: the port is in use or the "
                          f"address is not local ({exc.strerror or exc})") from None
        self._server = server
        self.port = server.sockets[0].getsockname()[1]
        log.info("gRPC on %s:%d (native front end, nghttp2 %s)", settings.host, self.port, _h2.NGHTTP2_VERSION)
        return self.port

    def _tls(self) -> ssl.SSLContext | None:
        files = tls_files(self._settings)
        if files is None:
            return None
        cert, key, ca = files
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        context.set_alpn_protocols(["h2"])
        if ca is not None:
            context.load_verify_locations(ca)
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    def connection_closed(self) -> None:
        if self.stopping and not self.connections:
            self._idle.set()

    def begin_stop(self) -> None:
        """Stop accepting connections now and send each one a graceful GOAWAY; calls in flight get
        ``settings.drain_timeout_s`` to finish, then are cancelled."""
        if self._server is not None and self._stopping is None:
            self.stopping = True
            self._server.close()
            for connection in list(self.connections):
                connection.shut_down(self._settings.drain_idle_grace_s)
            self.connection_closed()
            self._stopping = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._idle.wait(), self._settings.drain_timeout_s)
        for connection in list(self.connections):
            connection.abort()

    async def stop(self) -> None:
        self.begin_stop()
        if self._stopping is not None:
            await self._stopping
        if self._server is not None:
            await self._server.wait_closed()
        self._server, self._stopping = None, None
