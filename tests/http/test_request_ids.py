"""x-request-id over HTTP: taken from the client (else the OIP id, else made), echoed in every
response, in error bodies beside the message, and as the OIP answer's id."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

_INFER = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 0, 0, 2]}]}


def test_the_clients_id_is_echoed(client: TestClient) -> None:
    response = client.post("/v2/models/m/infer", json=_INFER, headers={"x-request-id": "client-1"})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "client-1"
    assert "id" not in response.json()  # the OIP answer echoes the body's id only, as Triton does


def test_the_oip_id_is_kept_and_is_the_request_id_without_a_header(client: TestClient) -> None:
    response = client.post("/v2/models/m/infer", json={**_INFER, "id": "oip-3"})
    assert response.headers["x-request-id"] == "oip-3" and response.json()["id"] == "oip-3"
    both = client.post("/v2/models/m/infer", json={**_INFER, "id": "oip-4"}, headers={"x-request-id": "hdr-4"})
    assert both.headers["x-request-id"] == "hdr-4" and both.json()["id"] == "oip-4"


def test_without_any_id_each_request_gets_a_fresh_one(client: TestClient) -> None:
    made = [client.post("/v2/models/m/infer", json=_INFER) for _ in range(3)]
    ids = [response.headers["x-request-id"] for response in made]
    assert len(set(ids)) == 3


def test_an_unusable_id_is_replaced_not_refused(client: TestClient) -> None:
    response = client.post("/v2/models/m/infer", json=_INFER, headers={"x-request-id": "x" * 500})
    assert response.status_code == 200
    assert response.headers["x-request-id"] != "x" * 500


@pytest.mark.parametrize(("path", "body", "status", "key"), [
    ("/v2/models/nope/infer", _INFER, 404, "error"),
    ("/v2/models/m/infer", {"inputs": "wrong"}, 400, "error"),
    ("/predict", {"inputs": "wrong"}, 422, "detail"),
])
def test_error_bodies_carry_the_request_id_beside_the_message(client: TestClient, path: str, body: object,
                                                              status: int, key: str) -> None:
    response = client.post(path, json=body, headers={"x-request-id": "err-1"})
    assert response.status_code == status
    assert set(response.json()) == {key, "request_id"}
    assert response.json()["request_id"] == response.headers["x-request-id"] == "err-1"


def test_routes_fastapi_answers_echo_the_id_too(client: TestClient) -> None:
    response = client.get("/v2/models/m", headers={"x-request-id": "meta-1"})
    assert response.status_code == 200 and response.headers["x-request-id"] == "meta-1"
    missing = client.get("/v2/models/nope")
    assert missing.status_code == 404
    assert missing.json()["request_id"] == missing.headers["x-request-id"]


def test_predict_echoes_the_id(client: TestClient) -> None:
    response = client.post("/predict", json={"inputs": [[1, 0, 0, 2]]}, headers={"x-request-id": "p-1"})
    assert response.status_code == 200 and response.headers["x-request-id"] == "p-1"
