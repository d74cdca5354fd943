"""How a servicer method becomes an RPC: registration, the one error mapping, deadlines.

Servicers are plain classes with one ``async`` method per RPC (an async generator when
the RPC streams responses). ``add_service`` registers every method a service descriptor
declares, wrapping each so that a ServekitError ends the call with the gRPC code of the
error table (``error.grpc_code``) and its message, and anything unexpected is logged and
ends the call as INTERNAL with no traceback. No servicer maps errors on its own.

Each call is also given its request id here (the caller's ``x-request-id`` metadata, see
``servekit.observability.request_ids``), sent back in the trailing metadata of every answer,
error or not, and, when tracing is on, a SERVER span (``servekit.observability.tracing``).

Requests are parsed here too, not by grpc's deserializer hook: bytes that are not the
method's message are the client's error (INVALID_ARGUMENT naming the message type), while an
exception in grpc's hook would end the call as UNKNOWN. A unary method may return its response
already serialized (``bytes``): the serializer sends bytes as they are, so a hot method can
write its answer without building the message (``InferenceServicer.ModelInfer``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message

from servekit.errors import InvalidInput, ServekitError
from servekit.observability import request_ids, tracing

__all__ = ["Parse", "abort_with", "add_service", "deadline_of", "request_parser", "serialize"]

log = logging.getLogger("servekit.grpc")

Unary = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Message | bytes]]
Streaming = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Message]]


def deadline_of(context: grpc.aio.ServicerContext[Any, Any]) -> float | None:
    """The client's deadline as an absolute ``time.monotonic()``, or None when it set none."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


async def abort_with(context: grpc.aio.ServicerContext[Any, Any], error: Exception) -> None:
    """End the call with ``error``'s status from the error table (never returns)."""
    if not isinstance(error, ServekitError):
        log.error("unexpected error in a gRPC call", exc_info=error)
        error = ServekitError("internal server error")
    metadata = ((request_ids.HEADER, request_ids.ensure()),
                *((key.lower(), value) for key, value in error.headers().items()))
    context.set_trailing_metadata(metadata)
    await context.abort(grpc.StatusCode[error.grpc_code], error.message)


Parse = Callable[[bytes | memoryview], Message]


def request_parser(message_class: Any, full_name: str) -> Parse:
    """Bytes -> ``message_class``; bytes that are not one are the client's error (InvalidInput naming it)."""
    def parse(raw: bytes | memoryview) -> Message:
        try:
            message: Message = message_class.FromString(raw)
        except Exception:  # DecodeError, or anything protobuf raises on bytes it cannot read
            raise InvalidInput(f"the request is not a valid {full_name} message") from None
        return message

    return parse


async def _parsed(raw_requests: AsyncIterator[bytes], parse: Parse) -> AsyncIterator[Message]:
    async for raw in raw_requests:
        yield parse(raw)


def _incoming_request_id(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == request_ids.HEADER:
            return value if isinstance(value, str) else value.decode("latin-1")
    return None


def _unary(behaviour: Unary, parse: Parse, streamed: bool, method: str) -> Unary:
    async def answer(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Message | bytes:
        try:
            response = await behaviour(_parsed(request, parse) if streamed else parse(request), context)
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await abort_with(context, error)
            raise AssertionError("unreachable: abort raises") from error
        context.set_trailing_metadata(((request_ids.HEADER, request_ids.ensure()),))
        return response

    async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Message | bytes:
        token = request_ids.bind(_incoming_request_id(context))
        try:
            if tracing.tracer is None:
                return await answer(request, context)
            with tracing.grpc_span(method, context.invocation_metadata()) as span:
                try:
                    return await answer(request, context)
                finally:
                    span.set_attribute("rpc.grpc.status_code", _status_number(context))
        finally:
            request_ids.reset(token)

    return call


def _streaming(behaviour: Streaming, parse: Parse, streamed: bool, method: str) -> Streaming:
    async def answer(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Message]:
        try:
            async for response in behaviour(_parsed(request, parse) if streamed else parse(request), context):
                yield response
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await abort_with(context, error)
        context.set_trailing_metadata(((request_ids.HEADER, request_ids.ensure()),))

    async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Message]:
        # The caller's id is every request's of the call; without one, each request of a stream
        # (answered in a task of its own) settles its own: its OIP id, or a fresh one.
        token = request_ids.bind(_incoming_request_id(context))
        try:
            if tracing.tracer is None:
                async for response in answer(request, context):
                    yield response
                return
            with tracing.grpc_span(method, context.invocation_metadata()) as span:
                try:
                    async for response in answer(request, context):
                        yield response
                finally:
                    span.set_attribute("rpc.grpc.status_code", _status_number(context))
        finally:
            request_ids.reset(token)

    return call


def _status_number(context: grpc.aio.ServicerContext[Any, Any]) -> int:
    """The call's status code as a number (0: OK, also when none was set)."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return int(code.value[0])
    return int(code) if isinstance(code, int) else 0


def serialize(message: Message | bytes) -> bytes:
    """A response message's bytes; a method may answer with its response already serialized."""
    if type(message) is bytes:
        return message
    return message.SerializeToString()  # type: ignore[union-attr]


def add_service(server: grpc.aio.Server, service: ServiceDescriptor, servicer: object) -> None:
    """Register ``servicer``'s methods for every RPC of ``service`` (AttributeError if one is missing)."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for method in service.methods:
        behaviour = getattr(servicer, method.name)
        parse = request_parser(message_factory.GetMessageClass(method.input_type), method.input_type.full_name)
        options: dict[str, Any] = {"request_deserializer": None, "response_serializer": serialize}  # raw bytes in
        streamed = method.client_streaming
        method_path = f"/{service.full_name}/{method.name}"
        kind = (method.client_streaming, method.server_streaming)
        if kind[1]:
            call: Any = _streaming(behaviour, parse, streamed, method_path)
        else:
            call = _unary(behaviour, parse, streamed, method_path)
        make = {(False, False): grpc.unary_unary_rpc_method_handler,
                (False, True): grpc.unary_stream_rpc_method_handler,
                (True, False): grpc.stream_unary_rpc_method_handler,
                (True, True): grpc.stream_stream_rpc_method_handler}[kind]
        handlers[method.name] = make(call, **options)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
    server.add_registered_method_handlers(service.full_name, handlers)
