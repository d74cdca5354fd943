"""Open Inference Protocol REST routes, plus Triton's repository, config and stats extensions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response
from starlette.types import Receive

from servekit.codecs.oip import decode_infer_request, encode_infer_response
from servekit.errors import InvalidInput
from servekit.http.bodies import BodyLimits, check_json_elements, json_response, read_body, receive_body
from servekit.serving.dataplane import DataPlane
from servekit.types import is_decimal

__all__ = ["answer_infer", "router"]

router = APIRouter(prefix="/v2", tags=["Open Inference Protocol"])

_HEADER_LENGTH = "inference-header-content-length"
_JSON_TYPE = ("content-type", "application/json")

_INFER_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "id": {"type": "string"},
                        "parameters": {"type": "object"},
                        "inputs": {"type": "array", "items": {
                            "type": "object", "required": ["name", "shape", "datatype"],
                            "properties": {"name": {"type": "string"}, "shape": {"type": "array", "items": {
                                "type": "integer"}}, "datatype": {"type": "string"}, "parameters": {
                                "type": "object"}, "data": {"type": "array", "items": {}}}}},
                        "outputs": {"type": "array", "items": {"type": "object", "required": ["name"], "properties": {
                            "name": {"type": "string"}, "parameters": {"type": "object"}}}},
                    },
                }
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


def _plane(request: Request) -> DataPlane:
    plane: DataPlane = request.app.state.dataplane
    return plane


@router.get("/health/live")
async def server_live(request: Request) -> Response:
    return json_response({"live": _plane(request).live()})


@router.get("/health/ready")
async def server_ready(request: Request) -> Response:
    ready = _plane(request).ready()
    return json_response({"ready": ready}, 200 if ready else 503)


@router.get("")
async def server_metadata(request: Request) -> Response:
    return json_response(_plane(request).server_metadata())


@router.get("/models/stats")
async def all_statistics(request: Request) -> Response:
    return json_response(_plane(request).model_statistics())


@router.get("/models/{model}")
@router.get("/models/{model}/versions/{version}")
async def model_metadata(request: Request, model: str, version: str | None = None) -> Response:
    return json_response(_plane(request).model_metadata(model, version).to_dict())


@router.get("/models/{model}/ready")
@router.get("/models/{model}/versions/{version}/ready")
async def model_ready(request: Request, model: str, version: str | None = None) -> Response:
    ready = _plane(request).model_ready(model, version)
    return json_response({"name": model, "ready": ready}, 200 if ready else 503)


@router.get("/models/{model}/config")
@router.get("/models/{model}/versions/{version}/config")
async def model_config(request: Request, model: str, version: str | None = None) -> Response:
    return json_response(_plane(request).model_config(model, version))


@router.get("/models/{model}/stats")
@router.get("/models/{model}/versions/{version}/stats")
async def model_statistics(request: Request, model: str, version: str | None = None) -> Response:
    return json_response(_plane(request).model_statistics(model, version))


@router.post("/models/{model}/infer", openapi_extra=_INFER_DOC)
@router.post("/models/{model}/versions/{version}/infer", openapi_extra=_INFER_DOC)
async def infer(request: Request, model: str, version: str | None = None) -> Response:
    # Served by servekit.http.hot_routes before FastAPI routes it; declared here for the
    # OpenAPI document, and answering the same way should anything reach it.
    content, headers = await answer_infer(
        _plane(request), BodyLimits.of(request.app.state.settings), model, version, request.headers,
        request.receive,
    )
    return Response(content, headers=dict(headers))


async def answer_infer(plane: DataPlane, limits: BodyLimits, model: str, version: str | None,
                       headers: Mapping[str, str], receive: Receive) -> tuple[bytes, list[tuple[str, str]]]:
    """One infer request, from its headers (lower-case names) and ASGI ``receive`` to the body and
    headers of its 200 response; every failure raises (ServekitError: the error table)."""
    with plane.rejections("http", model):
        plane.require_model(model, version)  # unknown model or version: 404/503 before reading the body
        body = await receive_body(receive, headers, limits.max_bytes)
        header_length = headers.get(_HEADER_LENGTH)
        if header_length is not None and not is_decimal(header_length):
            raise InvalidInput("Inference-Header-Content-Length must be a non-negative integer")
        json_length = int(header_length) if header_length else None
        check_json_elements(body if json_length is None else body[:json_length], limits.max_json_elements)
        inference = decode_infer_request(body, model, version, json_length)
        if (key := headers.get("x-routing-key")) is not None:
            inference.parameters.setdefault("routing_key", key)
    response = await plane.infer(inference, "http")
    content, json_length = encode_infer_response(response, inference)
    if json_length is None:
        return content, [_JSON_TYPE]
    return content, [("content-type", "application/octet-stream"), ("inference-header-content-length",
                                                                     str(json_length))]


@router.post("/repository/index")
async def repository_index(request: Request) -> Response:
    return json_response(_plane(request).repository_index())


async def _no_load_parameters(request: Request) -> None:
    body = await read_body(request, 1024 * 1024)
    if body.strip():
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"request body is not valid JSON: {exc}") from None
        if isinstance(document, dict) and document.get("parameters"):
            raise InvalidInput("load parameters (config or file overrides) are not supported; edit the repository")


@router.post("/repository/models/{model}/load")
async def repository_load(request: Request, model: str) -> Response:
    await _no_load_parameters(request)
    await _plane(request).load_model(model, request.headers.get("authorization"))
    return json_response({})


@router.post("/repository/models/{model}/unload")
async def repository_unload(request: Request, model: str) -> Response:
    await _plane(request).unload_model(model, request.headers.get("authorization"))
    return json_response({})
