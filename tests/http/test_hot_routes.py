"""The infer and predict routes answered in front of FastAPI (servekit.http.hot_routes)."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from servekit.http.hot_routes import HotRoutes, match_infer_path, request_headers


@pytest.mark.parametrize(("path", "expected"), [
    ("/v2/models/m/infer", ("m", None)),
    ("/v2/models/m/versions/2/infer", ("m", "2")),
    ("/v2/models//infer", None),
    ("/v2/models/m/versions//infer", None),
    ("/v2/models/m/other/2/infer", None),
    ("/v2/models/m/ready", None),
    ("/v2/models/a/b/infer", None),
    ("/predict", None),
])
def test_infer_paths_match_what_fastapi_would(path: str, expected: tuple[str, str | None] | None) -> None:
    assert match_infer_path(path) == expected


def test_request_headers_are_read_as_starlette_reads_them() -> None:
    raw = [(b"content-type", b"application/json"), (b"X-Routing-Key", b"first"), (b"x-routing-key", b"second"),
           (b"inference-header-content-length", b"12")]
    assert request_headers({"headers": raw}) == {"content-type": "application/json", "x-routing-key": "first",
                                                 "inference-header-content-length": "12"}


def test_the_app_answers_hot_routes_in_front_of_fastapi(client: TestClient) -> None:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 0, 0, 2]}]}
    for path in ("/v2/models/m/infer", "/v2/models/m/versions/1/infer"):
        response = client.post(path, json=body)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert int(response.headers["content-length"]) == len(response.content)
        assert response.json()["model_name"] == "m"
    response = client.post("/predict", json={"inputs": [[1, 0, 0, 2]]})
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert isinstance(client.app._hot_routes, HotRoutes)  # type: ignore[attr-defined]  # in front of FastAPI


def test_errors_keep_the_error_table_and_their_keys(client: TestClient) -> None:
    missing = client.post("/v2/models/nope/infer", json={})
    assert missing.status_code == 404 and "nope" in missing.json()["error"]
    assert client.post("/v2/models/m/versions/9/infer", json={}).status_code == 404
    bad = client.post("/predict", content=b"not json")
    # /predict follows FastAPI: a body that is not JSON is a schema error, 422 (tests/e2e/test_simple_api.py)
    assert bad.status_code == 422 and "JSON" in bad.json()["detail"]
    too_big = client.post("/predict", content=b"[" + b"1," * 5000 + b"1]")
    assert too_big.status_code == 413 and "detail" in too_big.json()


def test_other_methods_and_paths_still_reach_fastapi(client: TestClient) -> None:
    assert client.get("/v2/models/m/infer").status_code == 405
    assert client.get("/predict").status_code == 405
    assert client.post("/v2/models/m/unknown", json={}).status_code == 404
    paths: dict[str, Any] = client.get("/openapi.json").json()["paths"]
    assert {"/predict", "/v2/models/{model}/infer", "/v2/models/{model}/versions/{version}/infer"} <= set(paths)


def test_an_unexpected_error_is_a_500_without_details(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    plane = client.app.state.dataplane  # type: ignore[attr-defined]

    async def explode(*args: object, **kwargs: object) -> object:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(plane, "infer", explode)
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 0, 0, 2]}]}
    response = client.post("/v2/models/m/infer", json=body)
    assert response.status_code == 500
    assert response.json() == {"error": "internal server error", "request_id": response.headers["x-request-id"]}
