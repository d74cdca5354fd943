"""``servekit.serve(...)``: a server in this process, asked over a real loopback socket, then stopped."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import numpy as np
import pytest

import servekit
from servekit.errors import ServekitError
from tests.builders import WEIGHTS, write_onnx_model
from tests.e2e.harness import free_port


def _listening(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    with socket.socket() as probe:
        return probe.connect_ex((host, int(port))) == 0


def test_a_model_file_is_served_until_the_with_block_ends(tmp_path: Path) -> None:
    path = write_onnx_model(tmp_path / "files").rename(tmp_path / "linear.onnx")
    grpc_port = free_port()
    with servekit.serve(path, http_port=0, grpc_port=grpc_port, max_batch_size=8) as server:
        assert server.url.startswith("http://127.0.0.1:") and server.port > 0
        x = np.arange(4, dtype=np.float32).reshape(1, 4)
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": x.ravel().tolist()}]}
        response = httpx.post(f"{server.url}/v2/models/linear/infer", json=body, timeout=30)
        assert response.status_code == 200, response.text
        y = next(out for out in response.json()["outputs"] if out["name"] == "y")
        assert np.allclose(y["data"], (x @ WEIGHTS).ravel())
        assert httpx.get(f"{server.url}/v2/models/linear/config", timeout=10).json()["max_batch_size"] == 8
        import tritonclient.grpc as grpcclient

        assert grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}").is_model_ready("linear")
        served_from = server.settings.repository
        assert served_from.is_dir()
    assert not _listening(server.url)
    assert not served_from.exists()  # the one-model repository is removed; the file stays
    assert path.is_file()


def test_a_handler_and_a_repository_serve_and_stop_by_hand(tmp_path: Path) -> None:
    (tmp_path / "doubler.py").write_text(
        "import numpy as np\nfrom servekit import BaseHandler\n\n\nclass Doubler(BaseHandler):\n"
        "    def inference(self, inputs):\n        return {'y': np.asarray(inputs['x']) * 2}\n", encoding="utf-8")
    server = servekit.serve(f"{tmp_path / 'doubler.py'}:Doubler", http_port=0, inputs=["x:FP32:-1,2"],
                            outputs=["y:FP32:-1,2"])
    try:
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1.5, -2.0]}]}
        answer = httpx.post(f"{server.url}/v2/models/doubler/infer", json=body, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["outputs"][0]["data"] == [3.0, -4.0]
    finally:
        server.stop()
        server.stop()  # idempotent
    assert not _listening(server.url)

    write_onnx_model(tmp_path / "repo" / "linear" / "1")
    with servekit.serve(tmp_path / "repo", http_port=0) as served:
        assert httpx.get(f"{served.url}/v2/models/linear/ready", timeout=10).status_code == 200


def test_a_model_that_fails_to_load_is_the_calls_error(tmp_path: Path) -> None:
    (tmp_path / "broken.onnx").write_bytes(b"not an onnx model")
    with pytest.raises(ServekitError, match="model broken failed to load"):
        servekit.serve(tmp_path / "broken.onnx", http_port=0)
    with pytest.raises(ValueError, match="apply to a single model file"):
        servekit.serve(tmp_path, name="x")
