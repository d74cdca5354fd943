"""TorchServe's inference API on the HTTP port, answered as TorchServe 0.12 answers: ``GET /ping``,
``/predictions/{model}[/{version}]`` and ``/explanations/{model}[/{version}]`` (POST, PUT or GET).
TorchServe's recorded answers, byte for byte, are in ``tests/formats/torchserve/torchserve_answers.json``.

Served in plain ASGI in front of FastAPI, like the OIP infer route (``servekit.http.hot_routes``):
a prediction is a hot path. A request becomes an ``InferenceRequest`` with one BYTES input
``body`` (the request body, one item) and the request parameters the ``torchserve`` runtime
documents: ``headers`` (every request header, as ``[name, value]`` pairs: the handler reads them,
and the Content-Type decides how the body is decoded) and ``explain`` (true on /explanations). Its
id is the client's ``x-request-id`` when it sent one, else a fresh UUID as in TorchServe; it is the
handler's ``context.get_request_id()`` and the answer's ``x-request-id``. The data plane runs it
through the model's batcher like any request, and the runtime's outputs become the answer:
``body`` its bytes, ``content_type`` its Content-Type (none when empty, as TorchServe sends none
unless the handler set one), ``status`` its status and ``headers`` (a JSON object) the handler's
other headers.

Errors are TorchServe's ``{"code", "type", "message"}``, pretty-printed as TorchServe prints JSON
(``torchserve_error``; the management API uses the same table), byte for byte, so with no request
id field (the id is in the ``x-request-id`` header, as TorchServe sends it). Unknown model 404
``ModelNotFoundException`` "Model not found: NAME", unknown version 404
``ModelVersionNotFoundException``, a handler that raised 503 ``InternalServerException``
"Prediction failed" (or a PredictionException's own code and message: the runtime's errors carry
TorchServe's status and message as ``torchserve_status`` and ``torchserve_message``). Past the
model's execution timeout servekit answers 504 ``RequestTimeoutException`` where TorchServe
answers 500 "Worker died.".
"""

from __future__ import annotations

import json
import logging
import random
from typing import Any

import numpy as np
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from servekit.errors import (
    Conflict,
    DeadlineExceeded,
    InvalidInput,
    ModelFailed,
    ModelNotFound,
    ModelNotReady,
    PermissionDenied,
    ServekitError,
    Unauthenticated,
    VersionNotFound,
)
from servekit.http.bodies import receive_body
from servekit.observability import request_ids
from servekit.serving.dataplane import DataPlane
from servekit.types import InferenceRequest, Tensor

__all__ = ["TorchServeRoutes", "is_torchserve_path", "torchserve_error", "torchserve_json", "torchserve_response"]

log = logging.getLogger("servekit.http")

# The torchserve runtime's request parameters (its module docstring).
HEADERS = "headers"
EXPLAIN = "explain"

PREDICTIONS = "/predictions/"
EXPLANATIONS = "/explanations/"
PING = "/ping"
MODELS = "/models/"
_METHODS = frozenset({"POST", "PUT", "GET"})
# TorchServe sends these on every answer.
_CONSTANT_HEADERS = [(b"pragma", b"no-cache"), (b"cache-control", b"no-cache; no-store, must-revalidate, private"),
                     (b"expires", b"Thu, 01 Jan 1970 00:00:00 UTC")]
_JSON = (b"content-type", b"application/json")
_ERROR_TYPES: tuple[tuple[type[ServekitError], str], ...] = (
    (VersionNotFound, "ModelVersionNotFoundException"),
    (ModelNotFound, "ModelNotFoundException"),
    (Conflict, "ConflictStatusException"),
    (Unauthenticated, "InvalidKeyException"),
    (PermissionDenied, "InvalidKeyException"),
    (DeadlineExceeded, "RequestTimeoutException"),
    (ModelNotReady, "ServiceUnavailableException"),
    (InvalidInput, "BadRequestException"),
)
_NOT_FOUND = {"code": 404, "type": "ResourceNotFoundException",
              "message": "Requested resource is not found, please refer to API document."}
_NOT_ALLOWED = {"code": 405, "type": "MethodNotAllowedException",
                "message": "Requested method is not allowed, please refer to API document."}


def is_torchserve_path(path: str) -> bool:
    """TorchServe's inference routes, and its management routes (``/models``), which TorchServe
    answers on the inference port with a 404 of its own shape, as servekit does here."""
    return path.startswith((PREDICTIONS, EXPLANATIONS, MODELS)) or path in (PING, "/models")


def torchserve_json(document: object) -> bytes:
    """JSON as TorchServe prints it: two-space indents, ``"key": value``, a final newline."""
    return json.dumps(document, indent=2, ensure_ascii=False).encode("utf-8") + b"\n"


def torchserve_error(error: ServekitError, model: str | None = None,
                     version: str | None = None) -> tuple[int, dict[str, Any]]:
    """(status, ``{"code", "type", "message"}``) of an error as TorchServe answers it. Given the
    ``model`` (and ``version``) a request named, a 404 carries TorchServe's message for it."""
    own_status = getattr(error, "torchserve_status", None)
    if isinstance(own_status, int):  # the torchserve runtime's failures carry TorchServe's answer
        message = str(getattr(error, "torchserve_message", "Prediction failed"))
        return own_status, {"code": own_status, "type": "InternalServerException", "message": message}
    if isinstance(error, ModelFailed):
        return 503, {"code": 503, "type": "InternalServerException", "message": "Prediction failed"}
    kind = next((name for cls, name in _ERROR_TYPES if isinstance(error, cls)), "InternalServerException")
    message = error.message
    if isinstance(error, VersionNotFound) and model is not None and version is not None:
        message = f"Model version: {version} does not exist for model: {model}"
    elif isinstance(error, ModelNotFound) and not isinstance(error, VersionNotFound) and model is not None:
        message = f"Model not found: {model}"
    return error.http_status, {"code": error.http_status, "type": kind, "message": message}


def new_uuid() -> str:
    """A random (version 4) UUID, as TorchServe gives each request; from ``random``, not the OS:
    an id, not a secret, and uuid4()'s system call was a visible part of a request's cost."""
    bits = (_random_bits(128) & _UUID4_CLEAR) | _UUID4_SET
    text = f"{bits:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


_random_bits = random.Random().getrandbits
_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)


def _headers(extra: list[tuple[bytes, bytes]], length: int, request_id: str | None = None
             ) -> list[tuple[bytes, bytes]]:
    chosen = request_id or request_ids.current() or new_uuid()
    return [*extra, (b"x-request-id", chosen.encode("ascii")), *_CONSTANT_HEADERS,
            (b"content-length", str(length).encode("ascii"))]


def torchserve_response(document: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A starlette Response holding ``document`` as TorchServe prints JSON, with its headers."""
    content = torchserve_json(document)
    response = Response(content, status_code=status)
    response.raw_headers = [*_headers([_JSON], len(content)), *(
        (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in (headers or {}).items())]
    return response


def _match(path: str, prefix: str) -> tuple[str, str | None] | None:
    parts = path[len(prefix):].split("/")
    if len(parts) == 1 and parts[0]:
        return parts[0], None
    if len(parts) == 2 and parts[0] and parts[1]:
        return parts[0], parts[1]
    return None


class TorchServeRoutes:
    """Answers TorchServe's inference API (see the module docstring) over one data plane."""

    def __init__(self, dataplane: DataPlane, limit: int) -> None:
        self.plane = dataplane
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        method: str = scope["method"]
        if path == PING:
            ready = self.plane.ready()
            await self._send(send, 200 if ready else 500, [_JSON],
                             torchserve_json({"status": "Healthy" if ready else "Unhealthy"}))
            return
        explain = path.startswith(EXPLANATIONS)
        matched = _match(path, EXPLANATIONS if explain else PREDICTIONS) if path.startswith(
            (EXPLANATIONS, PREDICTIONS)) else None
        if matched is None or method not in _METHODS:
            await self._send(send, 404 if matched is None else 405, [_JSON],
                             torchserve_json(_NOT_FOUND if matched is None else _NOT_ALLOWED))
            return
        model, version = matched
        request_id = request_ids.ensure(make=new_uuid)
        try:
            status, extra, content = await self._predict(scope, receive, model, version, explain, request_id)
        except ClientDisconnect:
            return  # nobody to answer
        except ServekitError as error:
            status, document = torchserve_error(error, model, version)
            extra = [_JSON, *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in error.headers().items())]
            content = torchserve_json(document)
        except Exception:
            log.exception("unexpected error on %s %s", method, scope["path"])
            status, extra = 500, [_JSON]
            content = torchserve_json({"code": 500, "type": "InternalServerException",
                                       "message": "internal server error"})
        await self._send(send, status, extra, content, request_id)

    async def _predict(self, scope: Scope, receive: Receive, model: str, version: str | None,
                       explain: bool, request_id: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        plane = self.plane
        pairs = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in scope["headers"]]
        with plane.rejections("torchserve_http", model):
            plane.require_model(model, version)  # 404/503 before reading the body
            body = await receive_body(receive, dict(pairs), self.limit)
        data = np.empty(1, dtype=object)
        data[0] = body
        parameters: dict[str, Any] = {HEADERS: pairs}
        if explain:
            parameters[EXPLAIN] = True
        request = InferenceRequest(model, [Tensor("body", "BYTES", (1,), data)], version, request_id,
                                   parameters=parameters)
        response = await plane.infer(request, "torchserve_http")
        outputs = {tensor.name: tensor.data for tensor in response.outputs}
        try:
            content = bytes(outputs["body"].reshape(-1)[0])
            content_type = bytes(outputs["content_type"].reshape(-1)[0])
            status = int(outputs["status"].reshape(-1)[0])
            headers = bytes(outputs["headers"].reshape(-1)[0])
        except (KeyError, IndexError, TypeError, ValueError):
            raise InvalidInput(f"model {model!r} does not answer TorchServe-style requests (outputs body, "
                               "content_type, status, headers: the torchserve runtime)") from None
        extra = [(b"content-type", content_type)] if content_type else []
        if headers not in (b"", b"{}"):
            extra.extend((str(k).lower().encode("latin-1"), str(v).encode("latin-1"))
                         for k, v in json.loads(headers).items())
        return status, extra, content

    @staticmethod
    async def _send(send: Send, status: int, extra: list[tuple[bytes, bytes]], content: bytes,
                    request_id: str | None = None) -> None:
        headers = _headers(extra, len(content), request_id)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})
