from __future__ import annotations

import gzip

import numpy as np
import orjson
import pytest
from starlette.testclient import TestClient

from tests.builders import WEIGHTS

X = [[1.0, 0.0, 0.0, 2.0], [0.0, 1.0, 1.0, 0.0]]


def infer_body(**input_overrides: object) -> dict[str, object]:
    return {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 4], "data": X, **input_overrides}]}


def test_health_and_metadata(client: TestClient) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").status_code == 200
    assert "binary_tensor_data" in client.get("/v2").json()["extensions"]
    meta = client.get("/v2/models/m").json()
    assert meta["versions"] == ["1"] and meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert client.get("/v2/models/m/versions/1").status_code == 200
    assert client.get("/v2/models/m/ready").status_code == 200
    assert client.get("/v2/models/broken/ready").status_code == 503


def test_infer_json_matches_the_model(client: TestClient) -> None:
    response = client.post("/v2/models/m/versions/1/infer", json={**infer_body(), "id": "abc"})
    assert response.status_code == 200
    document = response.json()
    assert document["id"] == "abc" and document["model_version"] == "1"
    y = np.array(document["outputs"][0]["data"], dtype=np.float32).reshape(2, 3)
    np.testing.assert_allclose(y, np.array(X, dtype=np.float32) @ WEIGHTS, rtol=1e-6)
    assert document["outputs"][1] == {"name": "label", "datatype": "INT64", "shape": [2], "data": [2, 2]}


def test_infer_binary_in_and_out_with_output_selection(client: TestClient) -> None:
    x = np.array(X, dtype=np.float32)
    header = orjson.dumps({
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 4], "parameters": {"binary_data_size": 32}}],
        "outputs": [{"name": "label", "parameters": {"binary_data": True}}],
    })
    response = client.post("/v2/models/m/infer", content=header + x.tobytes(),
                           headers={"Inference-Header-Content-Length": str(len(header))})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    length = int(response.headers["inference-header-content-length"])
    document = orjson.loads(response.content[:length])
    assert [o["name"] for o in document["outputs"]] == ["label"]
    assert np.frombuffer(response.content[length:], dtype=np.int64).tolist() == [2, 2]


def test_gzip_request_body_is_accepted(client: TestClient) -> None:
    raw = gzip.compress(orjson.dumps(infer_body()))
    response = client.post("/v2/models/m/infer", content=raw, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("path", "body", "status", "fragment"),
    [
        ("/v2/models/nope/infer", infer_body(), 404, "unknown model 'nope'"),
        ("/v2/models/m/versions/7/infer", infer_body(), 404, "has no version '7'"),
        ("/v2/models/broken/infer", infer_body(), 503, "instances"),
        ("/v2/models/m/infer", infer_body(datatype="FP64"), 400, "has datatype FP64; the model expects FP32"),
        ("/v2/models/m/infer", infer_body(shape=[4, 2]), 400, "has shape [4, 2]; the model expects [-1, 4]"),
        ("/v2/models/m/infer", infer_body(name="z"), 400, "no input named 'z'"),
        ("/v2/models/m/infer", {**infer_body(), "outputs": [{"name": "nope"}]}, 400, "no output named 'nope'"),
        ("/v2/models/m/infer", {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1]}]},
         400, "needs 4 values"),
        ("/v2/models/m/infer", {**infer_body(), "parameters": {"timeout": "soon"}}, 400, "'timeout' must be"),
    ],
)
def test_bad_requests_get_4xx_naming_the_problem(
    client: TestClient, path: str, body: dict[str, object], status: int, fragment: str
) -> None:
    response = client.post(path, json=body)
    assert response.status_code == status
    assert fragment in response.json()["error"]


def test_non_json_and_oversized_bodies(client: TestClient) -> None:
    response = client.post("/v2/models/m/infer", content=b"\x00garbage")
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]
    response = client.post("/v2/models/m/infer", content=b"[" + b"1," * 5000 + b"1]")
    assert response.status_code == 413 and "over the limit of 4096 bytes" in response.json()["error"]
    bomb = gzip.compress(b" " * 100_000)
    response = client.post("/v2/models/m/infer", content=bomb, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 413


def test_oversized_batch_is_split_across_batches(client: TestClient) -> None:
    rows = np.arange(40, dtype=np.float32).reshape(10, 4)
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [10, 4], "data": rows.ravel().tolist()}]}
    document = client.post("/v2/models/m/infer", json=body).json()
    np.testing.assert_allclose(np.array(document["outputs"][0]["data"]).reshape(10, 3), rows @ WEIGHTS, rtol=1e-5)


def test_config_stats_and_repository_extensions(client: TestClient) -> None:
    config = client.get("/v2/models/m/config").json()
    assert config["max_batch_size"] == 4
    assert config["input"] == [{"name": "x", "data_type": "TYPE_FP32", "dims": [4]}]
    client.post("/v2/models/m/infer", json=infer_body())
    stats = client.get("/v2/models/m/stats").json()["model_stats"][0]
    assert stats["inference_stats"]["success"]["count"] >= 1 and stats["execution_count"] >= 1
    assert {s["name"] for s in client.get("/v2/models/stats").json()["model_stats"]} == {"m"}
    index = client.post("/v2/repository/index").json()
    assert {(row["name"], row["state"]) for row in index} == {("m", "READY"), ("broken", "UNAVAILABLE")}
    assert client.post("/v2/repository/models/m/unload").status_code == 200
    assert client.get("/v2/models/m/ready").status_code == 503
    assert client.post("/v2/models/m/infer", json=infer_body()).status_code == 503
    assert client.post("/v2/repository/models/m/load").status_code == 200
    assert client.get("/v2/models/m/ready").status_code == 200
    response = client.post("/v2/repository/models/broken/load")
    assert response.status_code == 400 and "instances" in response.json()["error"]
    assert client.post("/v2/repository/models/ghost/load").status_code == 404


def test_openapi_document_lists_the_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "/v2/models/{model}/infer" in paths and "/predict" in paths
