"""An MLServer repository (model-settings.json) served by a real servekit process, answered over real
sockets with the Open Inference Protocol that MLServer speaks: an sklearn model and an ONNX model serve;
a runtime servekit cannot map, and a pickle nobody trusted, fail to load on their own."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
import pytest
import tritonclient.http as httpclient
from sklearn.linear_model import LogisticRegression

from tests.builders import WEIGHTS, write_onnx_model

from .harness import ServerProcess, servekit_command

PAGE = Path(__file__).resolve().parents[2] / "docs" / "triton.md"
ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]], dtype=np.float32)


def _settings(model_dir: Path, settings: dict[str, Any]) -> None:
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "model-settings.json").write_text(json.dumps(settings, indent=2))


def _classifier() -> LogisticRegression:
    rng = np.random.default_rng(7)
    features = rng.normal(size=(90, 4)).astype(np.float32)
    return LogisticRegression(max_iter=200).fit(features, np.repeat([0, 1, 2], 30))


@pytest.fixture(scope="module")
def mlserver_repository(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, LogisticRegression]:
    root = tmp_path_factory.mktemp("mlserver") / "models"
    classifier = _classifier()
    # iris: the example of docs/triton.md, as written there.
    example = next(block for block in re.findall(r"```json\n(.*?)```", PAGE.read_text(), flags=re.DOTALL)
                   if "mlserver_sklearn" in block)
    _settings(root / "iris", json.loads(example))
    joblib.dump(classifier, root / "iris" / "model.joblib")
    _settings(root / "matmul", {"name": "matmul", "implementation": "mlserver_onnx.OnnxModel",
                                "parameters": {"uri": "artifacts"}})
    write_onnx_model(root / "matmul" / "artifacts")
    _settings(root / "untrusted", {"implementation": "mlserver_sklearn.SKLearnModel"})
    joblib.dump(classifier, root / "untrusted" / "model.joblib")
    _settings(root / "booster", {"implementation": "mlserver_xgboost.XGBoostModel",
                                 "parameters": {"uri": "./model.bst"}})
    (root / "booster" / "model.bst").write_bytes(b"not read")
    return root, classifier


@pytest.fixture(scope="module")
def server(mlserver_repository: tuple[Path, LogisticRegression],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(mlserver_repository[0], tmp_path_factory.mktemp("logs") / "mlserver.log")
    process.start()
    try:
        yield process
    finally:
        process.stop()


def _body(outputs: list[str] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"inputs": [{"name": "predict", "datatype": "FP32", "shape": list(ROWS.shape),
                                        "data": ROWS.ravel().tolist()}]}
    if outputs is not None:
        body["outputs"] = [{"name": name} for name in outputs]
    return body


def _outputs(response: httpx.Response) -> dict[str, np.ndarray[Any, Any]]:
    assert response.status_code == 200, response.text
    return {out["name"]: np.array(out["data"]).reshape(out["shape"]) for out in response.json()["outputs"]}


def test_the_sklearn_model_answers_as_mlservers_runtime_names_it(
        server: ServerProcess, mlserver_repository: tuple[Path, LogisticRegression]) -> None:
    classifier = mlserver_repository[1]
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        default = _outputs(client.post("/v2/models/iris/infer", json=_body()))
        assert list(default) == ["predict"]  # as MLServer: predict alone, as a column
        np.testing.assert_array_equal(default["predict"], classifier.predict(ROWS).reshape(-1, 1))
        both = _outputs(client.post("/v2/models/iris/infer", json=_body(["predict", "predict_proba"])))
        np.testing.assert_allclose(both["predict_proba"], classifier.predict_proba(ROWS), rtol=1e-12)
        only = _outputs(client.post("/v2/models/iris/infer", json=_body(["predict_proba"])))
        assert list(only) == ["predict_proba"]
        wrong = client.post("/v2/models/iris/infer", json=_body(["label"]))
        assert wrong.status_code == 400 and "predict" in wrong.json()["error"]


def test_a_request_with_more_rows_than_max_batch_size_is_answered_whole(
        server: ServerProcess, mlserver_repository: tuple[Path, LogisticRegression]) -> None:
    """MLServer's max_batch_size counts requests; servekit's counts rows and cuts a larger request into parts."""
    many = np.tile(ROWS, (7, 1))  # 21 rows; the example's max_batch_size is 8
    body = {"inputs": [{"name": "predict", "datatype": "FP32", "shape": list(many.shape),
                        "data": many.ravel().tolist()}], "outputs": [{"name": "predict_proba"}]}
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        answer = _outputs(client.post("/v2/models/iris/infer", json=body))
    np.testing.assert_allclose(answer["predict_proba"], mlserver_repository[1].predict_proba(many), rtol=1e-12)


def test_the_settings_version_names_the_model_version(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        by_label = _outputs(client.post("/v2/models/iris/versions/v0.1.0/infer", json=_body(["predict"])))
        by_number = _outputs(client.post("/v2/models/iris/versions/1/infer", json=_body(["predict"])))
        np.testing.assert_array_equal(by_label["predict"], by_number["predict"])
        assert client.get("/v2/models/iris/versions/v0.1.0/ready").status_code == 200
        assert client.post("/v2/models/iris/versions/v9/infer", json=_body()).status_code == 404


def test_the_onnx_model_answers_the_triton_client(server: ServerProcess) -> None:
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    try:
        tensor = httpclient.InferInput("x", list(ROWS.shape), "FP32")
        tensor.set_data_from_numpy(ROWS, binary_data=True)
        result = client.infer("matmul", [tensor])
        np.testing.assert_allclose(result.as_numpy("y"), ROWS @ WEIGHTS, rtol=1e-5)
        np.testing.assert_array_equal(result.as_numpy("label"), np.argmax(ROWS @ WEIGHTS, axis=1))
        assert client.is_model_ready("matmul")
    finally:
        client.close()


def test_what_cannot_be_mapped_fails_its_own_model_with_the_reason(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        assert client.get("/v2/models/booster/ready").status_code != 200
        assert client.get("/v2/models/untrusted/ready").status_code != 200
        refused = client.post("/v2/models/booster/infer", json=_body())
        assert refused.status_code in (404, 503), refused.text
        rows = {row["name"]: row for row in client.post("/v2/repository/index").json()}
        assert client.get("/v2/health/ready").status_code == 200  # the others serve
    assert rows["iris"]["state"] == "READY" and rows["matmul"]["state"] == "READY"
    assert rows["booster"]["state"] == "UNAVAILABLE"
    assert "'mlserver_xgboost.XGBoostModel' (an XGBoost booster) has no servekit runtime" in rows["booster"]["reason"]
    assert rows["untrusted"]["state"] == "UNAVAILABLE"
    assert '"trust_pickle": true' in rows["untrusted"]["reason"]


def test_the_repositorys_settings_json_sets_the_ports(mlserver_repository: tuple[Path, LogisticRegression],
                                                      tmp_path: Path) -> None:
    """``servekit serve REPO`` with no port flags listens where MLServer's settings.json says."""
    root = tmp_path / "models"
    shutil.copytree(mlserver_repository[0] / "iris", root / "iris")
    process = ServerProcess(root, tmp_path / "server.log")
    (root / "settings.json").write_text(json.dumps({"host": "127.0.0.1", "http_port": process.port, "grpc_port": 0,
                                                    "metrics_port": 0, "debug": False, "server_name": "iris-server"}))
    process.args = servekit_command("serve", str(root), "--management-port", "0")
    process.start()
    try:
        with httpx.Client(base_url=process.base_url, timeout=10) as client:
            assert _outputs(client.post("/v2/models/iris/infer", json=_body(["predict"])))["predict"].shape == (3, 1)
    finally:
        process.stop()
    assert "skipped MLServer settings servekit does not read: server_name" in process.log()
