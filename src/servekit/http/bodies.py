"""Reading request bodies with a size limit, and turning errors into responses."""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive

from servekit.config import ServerSettings
from servekit.errors import InvalidInput, PayloadTooLarge, ServekitError
from servekit.observability import request_ids
from servekit.types import is_decimal

__all__ = ["BodyLimits", "check_json_elements", "error_response", "inflate", "json_response", "read_body",
           "receive_body"]

JSON = "application/json"


@dataclass(frozen=True, slots=True)
class BodyLimits:
    """What one request body may cost: its bytes (after decompression) and, when JSON, its values."""

    max_bytes: int
    max_json_elements: int

    @classmethod
    def of(cls, settings: ServerSettings) -> BodyLimits:
        return cls(settings.max_request_bytes, settings.max_json_elements)


def check_json_elements(document: bytes, limit: int) -> None:
    """413 when the JSON ``document`` holds more than ``limit`` values, judged before it is parsed:
    values are separated by commas, so a count of commas bounds them from above at the cost of
    one scan of the bytes (decoding 50 MB of numbers would cost some 700 MB of Python objects)."""
    if document.count(b",") >= limit:
        raise PayloadTooLarge(f"the JSON body holds more than {limit} values; send large tensors with the binary "
                              "tensor extension (or over gRPC)")


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, decompressed when gzip/deflate encoded; 413 past ``limit`` bytes."""
    return await receive_body(request.receive, request.headers, limit)


async def receive_body(receive: Receive, headers: Mapping[str, str], limit: int) -> bytes:
    """The whole body from ASGI ``receive``, decompressed when gzip/deflate encoded; 413 past
    ``limit`` bytes (before reading when Content-Length says so). ``headers`` has lower-case names.
    Raises ClientDisconnect when the client goes away before the body ends."""
    declared = headers.get("content-length")
    if declared is not None and is_decimal(declared) and int(declared) > limit:
        raise PayloadTooLarge(f"request body of {declared} bytes is over the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnect()
        chunk: bytes = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"request body is over the limit of {limit} bytes")
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    return inflate(body, headers.get("content-encoding", "identity"), limit)


def inflate(body: bytes, encoding: str, limit: int) -> bytes:
    """``body`` decoded per its Content-Encoding (identity, gzip or deflate); 413 past ``limit`` bytes."""
    encoding = encoding.lower()
    if encoding in ("identity", ""):
        return body
    if encoding not in ("gzip", "deflate"):
        raise InvalidInput(f"unsupported Content-Encoding {encoding!r}; use gzip, deflate or none")
    decompressor = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        inflated = decompressor.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidInput(f"body is not valid {encoding} data: {exc}") from None
    if len(inflated) > limit or decompressor.unconsumed_tail:
        raise PayloadTooLarge(f"decompressed request body is over the limit of {limit} bytes")
    return inflated


def json_response(document: object, status_code: int = 200) -> Response:
    return Response(orjson.dumps(document), status_code=status_code, media_type=JSON)


def error_response(error: ServekitError, key: str = "error", request_id: str | None = None) -> Response:
    """The error table's status and headers; ``key`` is 'error' (OIP) or 'detail' (simple API).
    With ``request_id``: a ``request_id`` field beside the message and an ``x-request-id`` header."""
    headers = error.headers()
    if request_id is None:
        document = {key: error.message}
    else:
        document = {key: error.message, "request_id": request_id}
        headers[request_ids.HEADER] = request_id
    return Response(orjson.dumps(document), status_code=error.http_status, media_type=JSON, headers=headers)
