"""One HTTP request through an ASGI app in-process: no socket, no server (pure, apart from the app)."""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.types import ASGIApp, Message

__all__ = ["ForwardedRequest", "ForwardedResponse", "call_app"]

Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True)
class ForwardedRequest:
    """What the ingress sends a model replica: picklable, so Ray can carry it between machines."""

    method: str
    path: str
    query: bytes = b""
    headers: Headers = field(default_factory=list)
    body: bytes = b""


@dataclass(frozen=True)
class ForwardedResponse:
    status: int
    headers: Headers
    body: bytes


async def call_app(app: ASGIApp, request: ForwardedRequest) -> ForwardedResponse:
    """Run ``request`` through ``app`` and collect its whole response (one body, however sent)."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "scheme": "http",
        "method": request.method, "path": request.path, "raw_path": request.path.encode(), "root_path": "",
        "query_string": request.query, "headers": request.headers,
        "client": ("127.0.0.1", 0), "server": ("127.0.0.1", 80),
    }
    sent_body = False
    status = 500
    headers: Headers = []
    chunks: list[bytes] = []

    async def receive() -> Message:
        nonlocal sent_body
        if sent_body:
            return {"type": "http.disconnect"}
        sent_body = True
        return {"type": "http.request", "body": request.body, "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status, headers
        if message["type"] == "http.response.start":
            status = message["status"]
            headers = [(bytes(key), bytes(value)) for key, value in message.get("headers", [])]
        elif message["type"] == "http.response.body":
            chunks.append(bytes(message.get("body", b"")))

    await app(scope, receive, send)
    return ForwardedResponse(status, headers, b"".join(chunks))
