"""The native gRPC front end (``--grpc-frontend native``): unary calls over nghttp2, on servekit's event loop.

grpcio's asyncio server costs more per call than servekit's whole inference path (its no-op
ceiling on a 2-core machine is about 3k calls/s at 32 connections, see
``benchmarks/results/grpc_frontends.md``). This front end keeps the sockets, TLS and the calls on
the event loop that serves HTTP, and leaves HTTP/2 itself (framing, HPACK, flow control, SETTINGS,
PING, GOAWAY) to nghttp2 through a small C extension (``_h2.c``, built at install when
libnghttp2's headers are present). Python sees whole calls: a path, the metadata and the message.

It serves the same servicers as the grpcio server (``InferenceServicer``, ``ModelServicer``, both
Health services) through the same descriptors, with the same error mapping (a ServekitError ends a
call with its ``grpc_code`` and message, anything else is logged and answered INTERNAL), request
ids in the trailing metadata, ``grpc-timeout`` as the deadline, and tracing spans. What it does not
serve: the streaming RPCs (ModelStreamInfer, PredictStream, PredictBidi, Health/Watch) and server
reflection; those answer UNIMPLEMENTED naming the grpcio front end, which serves everything. Nor
compressed messages (``grpc-encoding`` other than identity: UNIMPLEMENTED, as the spec asks).

Drain: ``begin_stop`` closes the listening socket and sends every connection a graceful GOAWAY;
calls in flight get ``drain_timeout_s`` to finish, then are cancelled and the connections closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message

from servekit.config import ServerSettings
from servekit.errors import InvalidInput, ServekitError
from servekit.grpc.health import HealthServicer, ModelHealthServicer
from servekit.grpc.inference import InferenceServicer
from servekit.grpc.model_service import ModelServicer
from servekit.grpc.native import _h2  # type: ignore[attr-defined]  # the C extension
from servekit.observability import request_ids, tracing
from servekit.serving.dataplane import DataPlane
from servekit.serving.simple import SimpleAPI
from servekit.tls import tls_files

__all__ = ["NativeGrpcServer"]

log = logging.getLogger("servekit.grpc")

# gRPC status codes by name (the numbers of grpc.StatusCode), without importing grpc's C core here.
STATUS = {"OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4, "NOT_FOUND": 5,
          "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8, "FAILED_PRECONDITION": 9,
          "ABORTED": 10, "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12, "INTERNAL": 13, "UNAVAILABLE": 14,
          "DATA_LOSS": 15, "UNAUTHENTICATED": 16}
# grpc-timeout units: seconds = digits * multiplier / divisor
_TIMEOUT_UNITS = {"H": (3600, 1), "M": (60, 1), "S": (1, 1), "m": (1, 10**3), "u": (1, 10**6), "n": (1, 10**9)}
_OK_TRAILER = (b"grpc-status", b"0")

Behaviour = Callable[[Any, "CallContext"], Awaitable[Message | bytes]]


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
    __slots__ = ("behaviour", "message_class", "name", "path", "streaming")

    def __init__(self, path: str, behaviour: Behaviour | None, message_class: Any, name: str,
                 streaming: bool) -> None:
        self.path, self.behaviour, self.message_class = path, behaviour, message_class
        self.name, self.streaming = name, streaming


def _methods(servicers: list[tuple[ServiceDescriptor, object]]) -> dict[bytes, _Method]:
    table: dict[bytes, _Method] = {}
    for service, servicer in servicers:
        for method in service.methods:
            path = f"/{service.full_name}/{method.name}"
            streaming = method.client_streaming or method.server_streaming
            table[path.encode()] = _Method(path, None if streaming else getattr(servicer, method.name),
                                           message_factory.GetMessageClass(method.input_type),
                                           method.input_type.full_name, streaming)
    return table


def _timeout(value: bytes) -> float | None:
    """``grpc-timeout`` (up to 8 digits and a unit) in seconds, or None when it is malformed."""
    unit = _TIMEOUT_UNITS.get(chr(value[-1])) if value else None
    digits = value[:-1]
    if unit is None or not digits.isdigit() or len(digits) > 8:
        return None
    return int(digits) * unit[0] / unit[1]


def _grpc_message(text: str) -> bytes:
    """``grpc-message`` as the spec writes it: UTF-8, percent-encoded outside printable ASCII and '%'."""
    return quote(text, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~", encoding="utf-8").encode("ascii")


def _error_trailers(code: str, message: str, request_id: str | None,
                    headers: dict[str, str] | None = None) -> list[tuple[bytes, bytes]]:
    trailers = [(b"grpc-status", str(STATUS[code]).encode()), (b"grpc-message", _grpc_message(message))]
    if request_id is not None:
        trailers.append((request_ids.HEADER.encode(), request_id.encode("latin-1", "replace")))
    for key, value in (headers or {}).items():
        trailers.append((key.lower().encode("latin-1"), value.encode("latin-1", "replace")))
    return trailers


class _Connection(asyncio.Protocol):
    """One client connection: bytes in to the session, whole calls out to tasks, answers back."""

    def __init__(self, server: NativeGrpcServer) -> None:
        self._server = server
        self._session = _h2.Session(server.max_message_bytes)
        self._transport: asyncio.Transport | None = None
        self._calls: dict[int, asyncio.Task[None]] = {}
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
            if path is None:  # the client reset a stream whose call is running
                task = self._calls.pop(stream_id, None)
                if task is not None:
                    task.cancel()
                continue
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

    def _start(self, stream_id: int, path: bytes, metadata: list[tuple[bytes, bytes]], message: bytes | None) -> None:
        method = self._server.methods.get(path)
        if method is None:
            self._answer_error(stream_id, "UNIMPLEMENTED", f"Method not found: {path.decode('latin-1')}", None)
            return
        if method.behaviour is None:
            self._answer_error(stream_id, "UNIMPLEMENTED", f"{method.path} streams; the native gRPC front end "
                               "serves unary calls only (serve with --grpc-frontend grpcio for streams)", None)
            return
        if message is None:
            self._answer_error(stream_id, "RESOURCE_EXHAUSTED", "received message larger than max "
                               f"({self._server.max_message_bytes} bytes)", None)
            return
        deadline, request_id, decoded = None, None, []
        for key, value in metadata:
            if key == b"grpc-timeout":
                seconds = _timeout(value)
                if seconds is not None:
                    deadline = time.monotonic() + seconds
                continue
            if key == b"grpc-encoding" and value != b"identity":
                self._answer_error(stream_id, "UNIMPLEMENTED", f"grpc-encoding {value.decode('latin-1')} is not "
                                   "supported (send identity)", None)
                return
            if key.startswith(b"grpc-") or key in (b"te", b"content-type", b"user-agent"):
                continue
            name = key.decode("latin-1")
            if name == request_ids.HEADER:
                request_id = value.decode("latin-1")
            decoded.append((name, value if name.endswith("-bin") else value.decode("latin-1")))
        if len(message) < 5 or message[0] != 0 or int.from_bytes(message[1:5], "big") != len(message) - 5:
            problem = ("a compressed message without grpc-encoding" if message[:1] == b"\x01"
                       else "not exactly one length-prefixed message")
            self._answer_error(stream_id, "INTERNAL", f"the request body is {problem}", None)
            return
        context = CallContext(tuple(decoded), deadline)
        task = asyncio.get_running_loop().create_task(self._run(stream_id, method, message, context, request_id))
        self._calls[stream_id] = task

    async def _run(self, stream_id: int, method: _Method, message: bytes, context: CallContext,
                   incoming_id: str | None) -> None:
        token = request_ids.bind(incoming_id)
        try:
            if tracing.tracer is None:
                await self._answer(stream_id, method, message, context)
            else:
                with tracing.grpc_span(method.path, context.invocation_metadata()) as span:
                    status = await self._answer(stream_id, method, message, context)
                    span.set_attribute("rpc.grpc.status_code", status)
        except asyncio.CancelledError:
            pass  # the client reset the stream, or the connection went away: nobody to answer
        finally:
            request_ids.reset(token)
            self._calls.pop(stream_id, None)
            self._server.call_done()

    async def _answer(self, stream_id: int, method: _Method, message: bytes, context: CallContext) -> int:
        """Run one call and answer it; returns the gRPC status number it ended with."""
        assert method.behaviour is not None
        try:
            try:
                request = method.message_class.FromString(memoryview(message)[5:])
            except Exception:  # DecodeError, or anything protobuf raises on bytes it cannot read
                raise InvalidInput(f"the request is not a valid {method.name} message") from None
            response = await method.behaviour(request, context)
            payload = response if type(response) is bytes else response.SerializeToString()  # type: ignore[union-attr]
            if len(payload) > self._server.max_message_bytes:
                raise _TooLarge(len(payload), self._server.max_message_bytes)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            if isinstance(error, _TooLarge):
                code, text, headers = "RESOURCE_EXHAUSTED", str(error), None
            elif isinstance(error, ServekitError):
                code, text, headers = error.grpc_code, error.message, error.headers()
            else:
                log.error("unexpected error in a gRPC call", exc_info=error)
                code, text, headers = "INTERNAL", "internal server error", None
            self._answer_error(stream_id, code, text, request_ids.ensure(), headers)
            return STATUS[code]
        self._session.respond(stream_id, payload,
                              (_OK_TRAILER, (b"x-request-id", request_ids.ensure().encode("latin-1", "replace"))))
        self._flush_soon()
        return 0

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

    def shut_down(self) -> None:
        """Graceful GOAWAY now; the connection closes once its calls are answered."""
        self._closing = True
        self._session.shutdown_notice()
        self._flush()

    def abort(self) -> None:
        for task in self._calls.values():
            task.cancel()
        if self._transport is not None:
            self._transport.abort()

    @property
    def busy(self) -> bool:
        return bool(self._calls)


class _TooLarge(Exception):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"response message of {size} bytes is larger than the limit ({limit} bytes)")


class NativeGrpcServer:
    """Serves the unary RPCs of servekit's gRPC services on ``settings.host:grpc_port`` over nghttp2.

    The same interface as :class:`servekit.grpc.server.GrpcServer`: ``start``, ``begin_stop``, ``stop``."""

    def __init__(self, plane: DataPlane, simple: SimpleAPI, settings: ServerSettings) -> None:
        self._settings = settings
        self.max_message_bytes = settings.grpc_max_message_bytes
        inference, model = InferenceServicer(plane), ModelServicer(simple)
        names = [inference.service.full_name, model.service.full_name, ModelHealthServicer.service.full_name]
        health = HealthServicer(plane, server_services=names)
        self.methods = _methods([(inference.service, inference), (model.service, model),
                                 (health.service, health), (ModelHealthServicer.service, ModelHealthServicer(health))])
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

    def call_done(self) -> None:
        if self.stopping:
            for connection in list(self.connections):
                connection._flush()  # a draining connection closes once its last call is answered
            self.connection_closed()

    def connection_closed(self) -> None:
        if self.stopping and not any(connection.busy for connection in self.connections):
            self._idle.set()

    def begin_stop(self) -> None:
        """Stop accepting connections now and send each one a graceful GOAWAY; calls in flight get
        ``settings.drain_timeout_s`` to finish, then are cancelled."""
        if self._server is not None and self._stopping is None:
            self.stopping = True
            self._server.close()
            for connection in list(self.connections):
                connection.shut_down()
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
