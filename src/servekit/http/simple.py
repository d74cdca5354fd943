"""The simple JSON API of DESIGN.md: POST /predict and GET /health on the default model."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from servekit.codecs.simple import decode_predict_request, encode_predict_response
from servekit.dataplane import DataPlane
from servekit.http.bodies import json_response, read_body

__all__ = ["router"]

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
async def predict(request: Request) -> Response:
    plane: DataPlane = request.app.state.dataplane
    with plane.rejections("simple_http"):
        body = await read_body(request, request.app.state.settings.max_request_bytes)
        rows, return_probabilities = decode_predict_request(body)
    result = await plane.predict(rows, return_probabilities, protocol="simple_http")
    return Response(encode_predict_response(result), media_type="application/json")


@router.get("/health")
async def health(request: Request) -> Response:
    plane: DataPlane = request.app.state.dataplane
    report = plane.health()
    return json_response(report, 200 if report["status"] == "ok" else 503)
