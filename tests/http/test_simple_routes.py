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
    expected = np.array(rows, dtype=np.float32) @ WEIGHTS
    assert document["predictions"] == expected.argmax(axis=1).tolist()
    np.testing.assert_allclose(document["probabilities"], expected, rtol=1e-6)
    assert document["latency_ms"] > 0
    assert client.post("/predict", json={"inputs": rows}).json()["probabilities"] is None


def test_predict_errors(client: TestClient) -> None:
    assert client.post("/predict", json={"inputs": [1, 2, 3, 4]}).status_code == 400
    assert client.post("/predict", json={"rows": [[1]]}).status_code == 422
    response = client.post("/predict", json={"inputs": [[1.0, 2.0]]})
    assert response.status_code == 400 and "the model expects [-1, 4]" in response.json()["detail"]


def test_health(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok", "model_loaded": True, "device": "cpu"}
