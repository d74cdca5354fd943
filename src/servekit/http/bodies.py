"""Reading request bodies with a size limit, and turning errors into responses."""

from __future__ import annotations

import zlib

import orjson
from starlette.requests import Request
from starlette.responses import Response

from servekit.errors import InvalidInput, PayloadTooLarge, ServekitError

__all__ = ["error_response", "json_response", "read_body"]

JSON = "application/json"


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, decompressed when gzip/deflate encoded; 413 past ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body of {declared} bytes is over the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").lower()
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


def error_response(error: ServekitError, key: str = "error") -> Response:
    """The error table's status and headers; ``key`` is 'error' (OIP) or 'detail' (simple API)."""
    return Response(
        orjson.dumps({key: error.message}),
        status_code=error.http_status,
        media_type=JSON,
        headers=error.headers(),
    )
