"""The HTTP front of a servekit application on Ray Serve: health answered here, everything
under ``/v2/models/{name}`` forwarded to that model's replicas, byte for byte both ways."""

from __future__ import annotations

from typing import Any, Protocol

import orjson
from starlette.requests import Request
from starlette.responses import Response

from servekit import __version__
from servekit.ray.asgi import ForwardedRequest, ForwardedResponse

__all__ = ["Ingress", "model_of"]

# Hop-by-hop headers describe one connection, not the message: never carried across.
_HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"host", b"content-length"})
_MODELS_PREFIX = "/v2/models/"


class _ReplicaHandle(Protocol):
    """What the ingress needs of a Ray Serve deployment handle (typed here: Ray ships no stubs)."""

    @property
    def forward(self) -> Any: ...


def model_of(path: str) -> str | None:
    """The model a ``/v2/models/{name}[/...]`` path names, or None for any other path."""
    if not path.startswith(_MODELS_PREFIX):
        return None
    return path[len(_MODELS_PREFIX):].split("/", 1)[0] or None


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


class Ingress:
    """Ray Serve calls an instance with each HTTP request; ``models`` maps names to handles."""

    def __init__(self, models: dict[str, _ReplicaHandle]) -> None:
        self.models = models

    async def __call__(self, request: Request) -> Response:
        path = _local_path(request)
        if path in ("/v2/health/live", "/v2/health/ready"):
            # Serve routes here only once every deployment of the application is running.
            return _json(200, {"live": True} if path.endswith("live") else {"ready": True})
        if path == "/v2":
            return _json(200, {"name": "servekit", "version": __version__, "extensions": ["ray"]})
        name = model_of(path)
        if name is None:
            return _json(404, {"error": f"no route {path}"})
        handle = self.models.get(name)
        if handle is None:
            return _json(404, {"error": f"unknown model {name!r}"})
        forwarded = ForwardedRequest(
            method=request.method, path=path, query=request.scope.get("query_string", b""),
            headers=[(key, value) for key, value in request.scope["headers"] if key not in _HOP_BY_HOP],
            body=await request.body(),
        )
        answer: ForwardedResponse = await handle.forward.remote(forwarded)
        response = Response(answer.body, status_code=answer.status)
        response.raw_headers = [(key, value) for key, value in answer.headers if key not in _HOP_BY_HOP]
        response.raw_headers.append((b"content-length", str(len(answer.body)).encode()))
        return response


def _local_path(request: Request) -> str:
    """The path below the application's route prefix, whether or not Serve already cut it."""
    path: str = request.scope["path"]
    root: str = request.scope.get("root_path", "")
    if root and root != "/" and path.startswith(root):
        path = path[len(root):] or "/"
    return path
