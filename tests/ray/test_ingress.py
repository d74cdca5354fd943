"""servekit.ray.ingress: routing and byte-for-byte forwarding, with a stand-in for Ray's handle (no Ray)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.requests import Request

from servekit.ray.asgi import ForwardedRequest, ForwardedResponse
from servekit.ray.ingress import Ingress, model_of


class _Remote:
    def __init__(self, answer: ForwardedResponse) -> None:
        self.answer = answer
        self.seen: list[ForwardedRequest] = []

    async def remote(self, request: ForwardedRequest) -> ForwardedResponse:
        self.seen.append(request)
        return self.answer


class _Handle:
    def __init__(self, answer: ForwardedResponse) -> None:
        self.forward = _Remote(answer)


def _request(method: str, path: str, body: bytes = b"", root_path: str = "") -> Request:
    scope: dict[str, Any] = {"type": "http", "method": method, "path": path, "root_path": root_path,
                             "query_string": b"", "headers": [(b"host", b"x"), (b"content-type", b"a/b")]}
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(scope, receive)


@pytest.mark.parametrize(("path", "model"), [
    ("/v2/models/linear", "linear"), ("/v2/models/linear/versions/2/infer", "linear"),
    ("/v2/models/", None), ("/v2/health/ready", None), ("/predict", None),
])
def test_model_of(path: str, model: str | None) -> None:
    assert model_of(path) == model


def test_forwards_the_request_and_returns_the_replica_answer() -> None:
    answer = ForwardedResponse(200, [(b"content-type", b"application/octet-stream"),
                                     (b"inference-header-content-length", b"12"), (b"content-length", b"99")],
                               b"header+bytes")
    handle = _Handle(answer)
    ingress = Ingress({"linear": handle})
    response = asyncio.run(ingress(_request("POST", "/api/v2/models/linear/infer", b"body", root_path="/api")))
    assert response.status_code == 200
    assert response.body == b"header+bytes"
    assert response.headers["inference-header-content-length"] == "12"
    assert response.headers["content-length"] == str(len(b"header+bytes"))
    [seen] = handle.forward.seen
    assert (seen.method, seen.path, seen.body) == ("POST", "/v2/models/linear/infer", b"body")
    assert (b"host", b"x") not in seen.headers and (b"content-type", b"a/b") in seen.headers


def test_health_and_unknown_models_are_answered_by_the_ingress() -> None:
    ingress = Ingress({})
    assert asyncio.run(ingress(_request("GET", "/v2/health/ready"))).status_code == 200
    assert asyncio.run(ingress(_request("GET", "/v2"))).status_code == 200
    missing = asyncio.run(ingress(_request("GET", "/v2/models/absent")))
    assert missing.status_code == 404 and b"unknown model" in missing.body
