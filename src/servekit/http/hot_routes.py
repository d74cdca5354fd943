"""The hot routes, POST ``/v2/models/{m}[/versions/{v}]/infer`` and POST ``/predict`` (with its
twin ``/predict_async``), and TorchServe's ``/predictions``, ``/explanations`` and ``/ping``
(``servekit.http.torchserve``), answered in plain ASGI in front of FastAPI's routing.

Why: for a model that computes in tens of microseconds, FastAPI's per-request work (route
matching over every route, dependency and parameter solving, the exception middleware,
building Request and Response objects) cost more than the model and the codecs together
(benchmarks/results/http_mlp_profile.md). ``HotRoutes`` is a pure ASGI middleware: it
matches these two paths with a split, calls the same handlers the FastAPI routes call
(``oip.answer_infer``, ``simple.answer_predict``), and sends the answer as two ASGI messages.
Everything else, including other methods on the OIP and simple paths, goes on to FastAPI
untouched; those FastAPI routes stay declared, so they are in ``/openapi.json`` (TorchServe's
routes are answered here only, and are not in it).

Errors take the same table as FastAPI's handlers in ``servekit.http.app``: a ServekitError
its status (key ``error`` under /v2, ``detail`` for /predict), anything else a logged 500.

Every HTTP request passes here first, so this is where its request id is bound (the client's
``x-request-id``, see ``servekit.observability.request_ids``) and echoed in the response, and,
when tracing is on, where its server span begins and ends (``servekit.observability.tracing``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from servekit.config import ServerSettings
from servekit.errors import ServekitError
from servekit.http.bodies import BodyLimits, error_response
from servekit.http.oip import answer_infer
from servekit.http.simple import answer_predict
from servekit.http.torchserve import TorchServeRoutes, is_torchserve_path
from servekit.observability import request_ids, tracing
from servekit.serving.dataplane import DataPlane
from servekit.serving.simple import SimpleAPI

__all__ = ["PREDICT", "HotRoute", "HotRoutes", "match_hot_path", "match_infer_path", "request_headers"]

log = logging.getLogger("servekit.http")

_REQUEST_ID = request_ids.HEADER.encode("latin-1")


def request_headers(scope: Scope) -> dict[str, str]:
    """The request's headers by lower-case name, the first of repeated ones (as Starlette's
    ``Headers.get`` answers), built once: the handlers read several, and each ``Headers.get``
    scans and lower-cases every header again."""
    headers: dict[str, str] = {}
    for name, value in scope["headers"]:
        key = name.decode("latin-1").lower()
        if key not in headers:
            headers[key] = value.decode("latin-1")
    return headers


# A hot route: (model, version or None) of an infer path, or PREDICT for /predict and /predict_async.
HotRoute = tuple[str, str | None]
PREDICT: HotRoute = ("", None)


def match_hot_path(path: str) -> HotRoute | None:
    """The hot route a POST to ``path`` takes, or None (FastAPI's routes, TorchServe's)."""
    if path in ("/predict", "/predict_async"):
        return PREDICT
    return match_infer_path(path)


def match_infer_path(path: str) -> tuple[str, str | None] | None:
    """(model, version or None) for ``/v2/models/{m}/infer`` or ``/v2/models/{m}/versions/{v}/infer``,
    else None; segments must be non-empty, as FastAPI's ``{param}`` requires."""
    if not path.endswith("/infer") or not path.startswith("/v2/models/"):
        return None
    parts = path[len("/v2/models/"):-len("/infer")].split("/")
    if len(parts) == 1 and parts[0]:
        return parts[0], None
    if len(parts) == 3 and parts[1] == "versions" and parts[0] and parts[2]:
        return parts[0], parts[2]
    return None


class HotRoutes:
    """ASGI middleware answering the infer and predict routes itself (see the module docstring)."""

    def __init__(self, app: ASGIApp, dataplane: DataPlane, simple: SimpleAPI, settings: ServerSettings) -> None:
        self.app = app
        self.plane = dataplane
        self.simple = simple
        self.limits = BodyLimits.of(settings)
        self.torchserve = TorchServeRoutes(dataplane, settings.max_request_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = None
        for name, value in scope["headers"]:  # a plain scan: a quarter of Headers.get's cost
            if name == _REQUEST_ID:
                incoming = value.decode("latin-1")
                break
        token = request_ids.bind(incoming)
        try:
            if tracing.tracer is None:
                await self._route(scope, receive, send)
            else:
                await tracing.traced_http(self._route, scope, receive, send)
        finally:
            request_ids.reset(token)

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):]
        if scope["method"] != "POST":
            if is_torchserve_path(path):
                await self.torchserve(scope, receive, send, path)
            else:
                await self.app(scope, receive, _echo_request_id(send))
            return
        route = match_hot_path(path)
        if route is None:
            if is_torchserve_path(path):
                await self.torchserve(scope, receive, send, path)
            else:
                await self.app(scope, receive, _echo_request_id(send))
            return
        answer = await self.answer(route, request_headers(scope), receive, scope["path"])
        if answer is not None:
            status, headers, content = answer
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": content})

    async def answer(self, route: HotRoute, headers: Mapping[str, str], receive: Receive,
                     path: str) -> tuple[int, list[tuple[bytes, bytes]], bytes] | None:
        """One hot request's response (status, headers, body), from its headers (lower-case names)
        and ASGI ``receive``; None when the client went away first. ``path`` is for the log only.
        The ASGI route above and the protocol's own path (``servekit.http.protocol``) both call it."""
        try:
            if route == PREDICT:
                content = await answer_predict(self.simple, self.limits, headers, receive)
                extra: list[tuple[bytes, bytes]] = [(b"content-type", b"application/json")]
            else:
                content, named = await answer_infer(self.plane, self.limits, *route, headers, receive)
                extra = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in named]
        except ClientDisconnect:
            return None  # nobody to answer
        except ServekitError as error:
            return _error(error_response(error, "detail" if route == PREDICT else "error", request_ids.ensure()))
        except Exception:
            log.exception("unexpected error on POST %s", path)
            return _error(error_response(ServekitError("internal server error"), "error", request_ids.ensure()))
        extra.append((b"content-length", str(len(content)).encode("latin-1")))
        extra.append((_REQUEST_ID, request_ids.ensure().encode("latin-1")))
        return 200, extra, content


def _error(response: Response) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    return response.status_code, response.raw_headers, bytes(response.body)


def _echo_request_id(send: Send) -> Send:
    """``send`` adding ``x-request-id`` to the response of a route FastAPI answers (unless it set one)."""

    async def echo(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", ()))
            if not any(name.lower() == _REQUEST_ID for name, _ in headers):
                headers.append((_REQUEST_ID, request_ids.ensure().encode("latin-1")))
            message = {**message, "headers": headers}
        await send(message)

    return echo
