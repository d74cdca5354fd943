"""A model call that hangs, over real sockets: 504 at ``execution_timeout_s``, a fresh instance
serves the next request, other models never notice, and SIGTERM still exits 0."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .harness import ServerProcess
from .repos import _write_config, _write_handler, write_onnx_model


def _write_hanging_model(root: Path) -> None:
    model_dir = root / "hangs"
    _write_config(model_dir, {
        "max_batch_size": 1,
        "execution_timeout_s": 0.5,
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 1]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 1]}],
    })
    _write_handler(model_dir, '''
        import time

        from servekit import BaseHandler


        class Hangs(BaseHandler):
            def inference(self, data):
                if (data["x"] < 0).any():
                    time.sleep(3600)  # a call that never comes back in any useful time
                return {"y": data["x"] * 2}
    ''')


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    repository = tmp_path / "models"
    _write_hanging_model(repository)
    write_onnx_model(repository)
    process = ServerProcess(repository, tmp_path / "server.log", "--default-model", "onnx_linear").start()
    try:
        yield process
    finally:
        process.stop()


def _infer(client: httpx.Client, value: float) -> httpx.Response:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [value]}]}
    return client.post("/v2/models/hangs/infer", json=body)


def test_a_hung_call_is_answered_504_and_the_model_keeps_serving(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        hung = _infer(client, -1.0)
        assert hung.status_code == 504, hung.text
        assert hung.json() == {"error": "the model ran past its execution timeout (0.5 s)",
                               "request_id": hung.headers["x-request-id"]}
        after = _infer(client, 3.0)  # the hung call still sleeps: a replacement instance answers
        assert after.status_code == 200, after.text
        assert after.json()["outputs"][0]["data"] == [6.0]
        other = client.post("/predict", json={"inputs": [[1.0, 2.0, 3.0, 4.0]]})  # onnx_linear
        assert other.status_code == 200, other.text
        stats = client.get("/v2/models/hangs/stats").json()["model_stats"][0]["inference_stats"]
        assert stats["fail"]["count"] == 1 and stats["success"]["count"] == 1
    assert "ran past execution_timeout_s" in server.log()
    assert server.stop() == 0  # the abandoned call's thread does not hold the exit
