"""The simple JSON API (/predict, /health) over a real socket, on a server whose default model is ONNX."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from .harness import SIMPLE_MAX_REQUEST_BYTES, ServerProcess
from .repos import onnx_expected

ROWS = [[1.0, 2.0, 3.0, 4.0], [0.5, -1.0, 0.0, 2.0], [10.0, 0.0, 0.0, 0.0]]


@pytest.fixture(scope="module")
def http(simple_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=simple_server.base_url, timeout=30.0) as client:
        yield client


def _detail(response: httpx.Response) -> str:
    body: dict[str, Any] = response.json()
    assert set(body) == {"detail", "request_id"}, body  # FastAPI's shape, and the request id beside it
    assert body["request_id"] == response.headers["x-request-id"]
    assert isinstance(body["detail"], str) and body["detail"]
    return body["detail"]


def test_predict_with_probabilities(http: httpx.Client) -> None:
    response = http.post("/predict", json={"inputs": ROWS, "return_probabilities": True})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"predictions", "probabilities", "latency_ms"}
    probabilities, labels = onnx_expected(np.array(ROWS, dtype=np.float32), version=2)
    assert body["predictions"] == labels.tolist()
    assert all(isinstance(p, int) for p in body["predictions"])
    np.testing.assert_allclose(body["probabilities"], probabilities, rtol=1e-5, atol=1e-7)
    assert isinstance(body["latency_ms"], float) and 0 < body["latency_ms"] < 10_000


def test_predict_without_probabilities(http: httpx.Client) -> None:
    for document in ({"inputs": ROWS, "return_probabilities": False}, {"inputs": ROWS}):
        response = http.post("/predict", json=document)
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"predictions", "probabilities", "latency_ms"}
        assert body["probabilities"] is None
        assert body["predictions"] == onnx_expected(np.array(ROWS, dtype=np.float32))[1].tolist()


def test_predict_accepts_integer_rows(http: httpx.Client) -> None:
    response = http.post("/predict", json={"inputs": [[0, 0, 0, 1]]})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == [2]


@pytest.mark.parametrize(
    "inputs",
    [
        pytest.param([1.0, 2.0, 3.0, 4.0], id="rank-1"),
        pytest.param([[[1.0, 2.0, 3.0, 4.0]]], id="rank-3"),
        pytest.param([[1.0, 2.0, 3.0]], id="three-features"),
        pytest.param([], id="no-rows"),
    ],
)
def test_wrong_rank_or_width_is_400(http: httpx.Client, inputs: Any) -> None:
    response = http.post("/predict", json={"inputs": inputs})
    assert response.status_code == 400, response.text
    detail = _detail(response)
    assert "rank" in detail or "shape" in detail


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        pytest.param(b'{"return_probabilities": true}', "inputs", id="missing-inputs"),
        pytest.param(b'{"inputs": [["a", "b", "c", "d"]]}', "number", id="strings"),
        pytest.param(b'{"inputs": [[1, 2, 3, 4], [1, 2]]}', "equal length", id="ragged-rows"),
        pytest.param(b'{"inputs": "1,2,3,4"}', "inputs", id="inputs-not-a-list"),
        pytest.param(b'{"inputs": [[1, 2, 3, 4]], "return_probabilities": "yes"}', "return_probabilities",
                     id="flag-not-bool"),
        pytest.param(b'{"inputs": [[1, 2, 3, 4]], "extra": 1}', "extra", id="unknown-field"),
        pytest.param(b"[[1, 2, 3, 4]]", "object", id="not-an-object"),
        pytest.param(b"inputs=1,2,3,4", "JSON", id="not-json"),
    ],
)
def test_schema_errors_are_422(http: httpx.Client, body: bytes, needle: str) -> None:
    response = http.post("/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert needle in _detail(response)


def test_health(http: httpx.Client) -> None:
    response = http.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "healthy", "model_loaded": True, "device": "cpu"}


def test_body_over_the_limit_is_413(http: httpx.Client) -> None:
    rows = [[1.0, 2.0, 3.0, 4.0]] * 400
    body = httpx.Request("POST", "/", json={"inputs": rows}).content
    assert len(body) > SIMPLE_MAX_REQUEST_BYTES
    response = http.post("/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 413, response.text
    assert str(SIMPLE_MAX_REQUEST_BYTES) in _detail(response)


def test_streamed_body_over_the_limit_is_413(http: httpx.Client) -> None:
    """No Content-Length (chunked): the limit must hold while reading, not only on the header."""

    def chunks() -> Iterator[bytes]:
        yield b'{"inputs": ['
        for _ in range(300):
            yield b"[1.0, 2.0, 3.0, 4.0],"
        yield b"[1.0, 2.0, 3.0, 4.0]]}"

    response = http.post("/predict", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413, response.text
    assert str(SIMPLE_MAX_REQUEST_BYTES) in _detail(response)


def test_body_under_the_limit_still_works(http: httpx.Client) -> None:
    rows = [[1.0, 2.0, 3.0, 4.0]] * 100
    response = http.post("/predict", json={"inputs": rows})
    assert len(response.request.content) < SIMPLE_MAX_REQUEST_BYTES
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == [2] * 100


def test_oip_limit_applies_too(http: httpx.Client) -> None:
    data = [0.0] * 4 * 400
    document = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [400, 4], "data": data}]}
    response = http.post("/v2/models/onnx_linear/infer", json=document)
    assert response.status_code == 413
    assert "limit" in response.json()["error"]


def test_openapi_lists_both_apis(http: httpx.Client) -> None:
    response = http.get("/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert "post" in paths["/predict"]
    assert "post" in paths["/v2/models/{model}/infer"]
    assert "get" in paths["/health"]
    schema = paths["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert schema["required"] == ["inputs"]


def test_oip_on_the_same_server_agrees_with_predict(http: httpx.Client) -> None:
    document = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [3, 4], "data": ROWS}],
                "outputs": [{"name": "label"}]}
    response = http.post("/v2/models/onnx_linear/infer", json=document)
    assert response.status_code == 200, response.text
    [label] = response.json()["outputs"]
    assert label["name"] == "label"
    assert label["data"] == http.post("/predict", json={"inputs": ROWS}).json()["predictions"]
