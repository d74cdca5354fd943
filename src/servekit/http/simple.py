"""The simple JSON API of DESIGN.md: POST /predict (and its twin /predict_async) and GET /health on the
default model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response
from starlette.types import Receive

from servekit.codecs.simple import decode_predict_request, encode_predict_response
from servekit.http.bodies import BodyLimits, check_json_elements, json_response, receive_body
from servekit.serving.simple import SimpleAPI

__all__ = ["answer_predict", "router"]

router = APIRouter(tags=["Simple API"])

_PREDICT_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {
            "type": "object",
            "required": ["inputs"],
            "properties": {
                "inputs": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
                "return_probabilities": {"type": "boolean", "default": False},
            },
        }}},
    },
    "responses": {"200": {"description": "predictions", "content": {"application/json": {"schema": {
        "type": "object",
        "properties": {
            "predictions": {"type": "array", "items": {}},
            "probabilities": {"type": "array", "nullable": True, "items": {"type": "array", "items": {
                "type": "number"}}},
            "latency_ms": {"type": "number"},
        },
    }}}}},
}


@router.post("/predict", openapi_extra=_PREDICT_DOC)
@router.post("/predict_async", openapi_extra=_PREDICT_DOC, description="The same as /predict (kept for "
             "clients of the async-batching pattern: every request is batched dynamically either way).")
async def predict(request: Request) -> Response:
    # Served by servekit.http.hot_routes before FastAPI routes it; declared here for the
    # OpenAPI document, and answering the same way should anything reach it.
    content = await answer_predict(_simple(request), BodyLimits.of(request.app.state.settings), request.headers,
                                   request.receive)
    return Response(content, media_type="application/json")


def _simple(request: Request) -> SimpleAPI:
    simple: SimpleAPI = request.app.state.simple
    return simple


async def answer_predict(simple: SimpleAPI, limits: BodyLimits, headers: Mapping[str, str],
                         receive: Receive) -> bytes:
    """One /predict request, from its headers (lower-case names) and ASGI ``receive`` to the JSON
    body of its 200 response; every failure raises (ServekitError: the error table)."""
    with simple.rejections("simple_http"):
        body = await receive_body(receive, headers, limits.max_bytes)
        check_json_elements(body, limits.max_json_elements)
        rows, return_probabilities = decode_predict_request(body)
    result = await simple.predict(rows, return_probabilities, protocol="simple_http")
    return encode_predict_response(result)


@router.get("/health")
async def health(request: Request) -> Response:
    report = _simple(request).health()
    return json_response(report, 200 if report["status"] == "healthy" else 503)
