from __future__ import annotations

import numpy as np
from starlette.testclient import TestClient

from tests.builders import WEIGHTS


def test_predict_returns_exactly_the_documented_shape(client: TestClient) -> None:
    rows = [[1.0, 0.0, 0.0, 2.0], [5.0, 0.0, 0.0, 0.0]]
    response = client.post("/predict", json={"inputs": rows, "return_probabilities": True})
    assert response.status_code == 200
    document = response.json()
    assert set(document) == {"predictions", "probabilities", "latency_ms"}
    logits = np.array(rows, dtype=np.float64) @ WEIGHTS
    assert document["predictions"] == logits.argmax(axis=1).tolist()
    # The model outputs scores (logits): the API sends their softmax, a distribution per row.
    softmax = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(document["probabilities"], softmax, rtol=1e-5)
    assert document["latency_ms"] > 0
    assert client.post("/predict", json={"inputs": rows}).json()["probabilities"] is None


def test_predict_async_answers_exactly_like_predict(client: TestClient) -> None:
    rows = {"inputs": [[1.0, 0.0, 0.0, 2.0]], "return_probabilities": True}
    plain, twin = client.post("/predict", json=rows).json(), client.post("/predict_async", json=rows).json()
    assert set(twin) == set(plain) and twin["predictions"] == plain["predictions"]
    assert twin["probabilities"] == plain["probabilities"]
    assert client.post("/predict_async", json={"inputs": [1, 2]}).status_code == 400
    assert client.post("/predict_async", json={"rows": [[1]]}).status_code == 422


def test_predict_errors(client: TestClient) -> None:
    assert client.post("/predict", json={"inputs": [1, 2, 3, 4]}).status_code == 400
    assert client.post("/predict", json={"rows": [[1]]}).status_code == 422
    response = client.post("/predict", json={"inputs": [[1.0, 2.0]]})
    assert response.status_code == 400 and "the model expects [-1, 4]" in response.json()["detail"]


def test_health(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "healthy", "model_loaded": True, "device": "cpu"}
