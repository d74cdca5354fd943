"""The management API (TorchServe's), served on its own port: thin routes over ModelManager.

    GET    /models?limit=&next_page_token=          list models, a page at a time
    POST   /models?url=&model_name=&batch_size=&max_batch_delay=&initial_workers=&response_timeout=
    GET    /models/{m}[/{v}]                        describe every version, or one (a label, a number, all)
    PUT    /models/{m}?min_worker=&max_worker=&synchronous=   scale instances (200 synchronous, else 202)
    PUT    /models/{m}/{v}/set-default              the default version
    PUT    /models/{m}/traffic   {"1": 90, "2": 10} split unversioned traffic ({} clears)
    DELETE /models/{m}[/{v}]                        unregister a model or one version

Every route asks for ``Authorization: Bearer TOKEN`` unless the app is built without a token.
Answers are JSON as TorchServe prints it (``servekit.http.torchserve``); errors come from the one
error table as TorchServe shapes and names them: ``{"code", "type", "message"}``.
"""

from __future__ import annotations

import logging

import orjson
from fastapi import FastAPI, Request
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from servekit import __version__
from servekit.errors import InvalidInput, ServekitError
from servekit.http.bodies import read_body
from servekit.http.torchserve import torchserve_error, torchserve_response
from servekit.management.manager import ModelManager
from servekit.management.store import RegistrationOverrides
from servekit.serving.control import bearer_error

__all__ = ["BearerAuth", "create_management_app", "management_error"]

log = logging.getLogger("servekit.management")

_MAX_BODY = 64 * 1024


def management_error(error: ServekitError) -> Response:
    status, document = torchserve_error(error)
    return torchserve_response(document, status, error.headers())


class BearerAuth:
    """ASGI middleware: 401 (with WWW-Authenticate) without a bearer token, 403 with a wrong one."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._token = token.encode("utf-8")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            error = self._check(Headers(scope=scope).get("authorization"))
            if error is not None:
                await management_error(error)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _check(self, header: str | None) -> ServekitError | None:
        return bearer_error(header, self._token)


def _int(request: Request, name: str) -> int | None:
    text = request.query_params.get(name)
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError:
        raise InvalidInput(f"query parameter {name!r} must be an integer, not {text!r}") from None


def _float(request: Request, name: str) -> float | None:
    text = request.query_params.get(name)
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        raise InvalidInput(f"query parameter {name!r} must be a number, not {text!r}") from None
    if not value >= 0:
        raise InvalidInput(f"query parameter {name!r} must be 0 or more")
    return value


def _true(request: Request, name: str) -> bool:
    return (request.query_params.get(name) or "").lower() == "true"


def _manager(request: Request) -> ModelManager:
    manager: ModelManager = request.app.state.manager
    return manager


def create_management_app(manager: ModelManager, *, token: str | None) -> FastAPI:
    """The management app over ``manager``; ``token`` None serves it without authentication."""
    app = FastAPI(title="servekit management", version=__version__,
                  description="Register, describe, scale, route and unregister models.")
    app.state.manager = manager

    @app.get("/models")
    async def list_models(request: Request) -> Response:
        limit = _int(request, "limit")
        page = _manager(request).list_models(100 if limit is None else limit,
                                             request.query_params.get("next_page_token") or None)
        return torchserve_response(page)

    @app.post("/models")
    async def register(request: Request) -> Response:
        for taken_from_the_archive in ("handler", "runtime"):
            if request.query_params.get(taken_from_the_archive):
                raise InvalidInput(f"servekit does not take {taken_from_the_archive}= at registration: the archive's "
                                   "manifest names it (repack the archive to change it)")
        timeout = _float(request, "response_timeout")
        overrides = RegistrationOverrides(_int(request, "batch_size"), _float(request, "max_batch_delay"),
                                          _int(request, "initial_workers"), timeout if timeout else None)
        if overrides.batch_size is not None and overrides.batch_size < 0:
            raise InvalidInput("batch_size must be 0 (no batching) or more")
        document = await _manager(request).register(request.query_params.get("url", ""),
                                                    request.query_params.get("model_name") or None, overrides)
        return torchserve_response(document)

    @app.get("/models/{model}")
    @app.get("/models/{model}/{version}")
    async def describe(request: Request, model: str, version: str | None = None) -> Response:
        return torchserve_response(_manager(request).describe(model, version))

    @app.put("/models/{model}")
    async def scale(request: Request, model: str) -> Response:
        synchronous = _true(request, "synchronous")
        document = await _manager(request).scale(model, _int(request, "min_worker"), _int(request, "max_worker"),
                                                 synchronous)
        return torchserve_response(document, 200 if synchronous else 202)

    @app.put("/models/{model}/{version}/set-default")
    async def set_default(request: Request, model: str, version: str) -> Response:
        return torchserve_response(_manager(request).set_default(model, version))

    @app.put("/models/{model}/traffic")
    async def set_traffic(request: Request, model: str) -> Response:
        body = await read_body(request, _MAX_BODY)
        try:
            document = orjson.loads(body) if body.strip() else None
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"request body is not valid JSON: {exc}") from None
        return torchserve_response(_manager(request).set_traffic(model, document))

    @app.delete("/models/{model}")
    @app.delete("/models/{model}/{version}")
    async def unregister(request: Request, model: str, version: str | None = None) -> Response:
        return torchserve_response(await _manager(request).unregister(model, version))

    app.add_exception_handler(ServekitError, _servekit_error)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected_error)
    if token is not None:
        app.add_middleware(BearerAuth, token=token)
    return app


async def _servekit_error(request: Request, error: ServekitError) -> Response:
    return management_error(error)


async def _http_error(request: Request, error: HTTPException) -> Response:
    """Routing's own errors, as TorchServe words them."""
    kind, message = {
        404: ("ResourceNotFoundException", "Requested resource is not found, please refer to API document."),
        405: ("MethodNotAllowedException", "Requested method is not allowed, please refer to API document."),
    }.get(error.status_code, ("BadRequestException", str(error.detail)))
    body = {"code": error.status_code, "type": kind, "message": message}
    return torchserve_response(body, error.status_code, dict(error.headers or {}))


async def _unexpected_error(request: Request, error: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return management_error(ServekitError("internal server error"))
