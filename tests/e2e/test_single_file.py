"""``servekit serve FILE``: one model file or handler served as a one-model repository, by the real
server process over loopback sockets, asked over HTTP (OIP and /predict) and gRPC."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.builders import WEIGHTS, write_onnx_model
from tests.conftest import require_module

from .harness import ServerProcess, servekit_command

HANDLER = '''
import numpy as np
from offsets import OFFSET  # a module beside the handler file

from servekit import BaseHandler


class Shifter(BaseHandler):
    def inference(self, inputs):
        return {"shifted": np.asarray(inputs["x"]) + OFFSET}


class Unused(BaseHandler):
    pass
'''


@contextmanager
def serving(tmp_path: Path, source: str | Path, *args: str) -> Iterator[ServerProcess]:
    server = ServerProcess(Path(source), tmp_path / "server.log", *args)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def infer(server: ServerProcess, model: str, name: str, array: np.ndarray[Any, Any],
          datatype: str = "FP32") -> dict[str, Any]:
    body = {"inputs": [{"name": name, "datatype": datatype, "shape": list(array.shape),
                        "data": array.ravel().tolist()}]}
    response = httpx.post(f"{server.base_url}/v2/models/{model}/infer", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return {out["name"]: out for out in response.json()["outputs"]}


def test_an_onnx_file_is_served_under_its_name_with_its_own_signature(tmp_path: Path) -> None:
    path = write_onnx_model(tmp_path / "files").rename(tmp_path / "linear.v3.onnx")
    with serving(tmp_path, path) as server:
        x = np.arange(8, dtype=np.float32).reshape(2, 4)
        outputs = infer(server, "linear", "x", x)
        assert np.allclose(np.asarray(outputs["y"]["data"]).reshape(2, 3), x @ WEIGHTS)
        config = httpx.get(f"{server.base_url}/v2/models/linear/config", timeout=10).json()
        assert config["max_batch_size"] == 32  # inferred: the batch dimension varies
        assert [tensor["name"] for tensor in config["input"]] == ["x"]
        # The only model: the simple API serves it without --default-model.
        predicted = httpx.post(f"{server.base_url}/predict", json={"inputs": [[1, 0, 0, 0]]}, timeout=10).json()
        assert predicted["predictions"] == [2]
        # gRPC too (tritonclient.grpc, as any OIP client).
        import tritonclient.grpc as grpcclient

        client = grpcclient.InferenceServerClient(server.grpc_url)
        assert client.is_model_ready("linear")
        served_from = Path(re.search(r"servekit serving (\S+): HTTP", server.log()).group(1))  # type: ignore[union-attr]
        assert (served_from / "linear" / "1" / "linear.v3.onnx").resolve() == path.resolve()
    assert not served_from.exists()  # the one-model repository goes with the server; the file stays
    assert path.is_file()


def test_name_and_max_batch_size_come_from_the_command_line(tmp_path: Path) -> None:
    path = write_onnx_model(tmp_path / "files")
    with serving(tmp_path, path, "--name", "scorer", "--max-batch-size", "4") as server:
        config = httpx.get(f"{server.base_url}/v2/models/scorer/config", timeout=10).json()
        assert config["max_batch_size"] == 4
        assert httpx.get(f"{server.base_url}/v2/models/model", timeout=10).status_code == 404


def test_a_torchscript_file_takes_its_tensors_from_the_command_line(tmp_path: Path) -> None:
    require_module("torch", "the torch extra")
    import torch

    module = torch.jit.script(torch.nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        module.weight.copy_(torch.arange(8, dtype=torch.float32).reshape(2, 4))
    torch.jit.save(module, str(tmp_path / "linear.pt"))
    refused = subprocess.run(servekit_command("serve", str(tmp_path / "linear.pt")), capture_output=True, text=True,
                             timeout=120)
    assert refused.returncode == 2
    assert "TorchScript file cannot describe its tensors" in refused.stderr and "--input" in refused.stderr
    with serving(tmp_path, tmp_path / "linear.pt", "--input", "x:FP32:-1,4", "--output", "y:FP32:-1,2") as server:
        x = np.ones((3, 4), dtype=np.float32)
        outputs = infer(server, "linear", "x", x)
        assert outputs["y"]["shape"] == [3, 2] and outputs["y"]["data"] == [6.0, 22.0] * 3
    # Without --output: one run on zeros tells the runtime what comes out.
    with serving(tmp_path, tmp_path / "linear.pt", "--input", "x:FP32:-1,4", "--name", "learnt") as server:
        metadata = httpx.get(f"{server.base_url}/v2/models/learnt", timeout=10).json()
        assert metadata["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [-1, 2]}]
        assert infer(server, "learnt", "x", np.ones((1, 4), dtype=np.float32))["output"]["data"] == [6.0, 22.0]


def test_a_skops_file_is_served_with_its_estimators_signature(tmp_path: Path) -> None:
    require_module("skops", "the sklearn extra")
    from tests.toolkit.models import write_sklearn_classifier

    estimator = write_sklearn_classifier(tmp_path / "classifier.skops")
    with serving(tmp_path, tmp_path / "classifier.skops") as server:
        x = np.random.default_rng(1).standard_normal((5, 5)).astype(np.float32)
        outputs = infer(server, "classifier", "input", x)
        assert outputs["label"]["data"] == estimator.predict(x).tolist()


def test_a_handler_file_and_class_is_served_and_imports_beside_itself(tmp_path: Path) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "shifter.py").write_text(HANDLER, encoding="utf-8")
    (code / "offsets.py").write_text("OFFSET = 10\n", encoding="utf-8")
    source = f"{code / 'shifter.py'}:Shifter"
    with serving(tmp_path, source, "--input", "x:FP32:-1,2", "--output", "shifted:FP32:-1,2") as server:
        outputs = infer(server, "shifter", "x", np.array([[1, 2]], dtype=np.float32))
        assert outputs["shifted"]["data"] == [11.0, 12.0]


@pytest.mark.parametrize(("args", "message"), [
    (["nothing.onnx"], "nothing.onnx: no such file"),
    (["weights.bin"], "model repository weights.bin is not a folder"),
    (["handler.py:Shifter"], "handler cannot describe its tensors"),
    (["model.onnx", "--input", "x:FP99:-1"], "unknown datatype 'FP99'"),
    (["model.onnx", "--name", ".hidden"], "'.hidden' is not a model name"),
    ([".", "--name", "x"], "apply to a single model file"),
])
def test_a_bad_single_file_is_refused_in_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    write_onnx_model(tmp_path)
    (tmp_path / "handler.py").write_text(HANDLER, encoding="utf-8")
    done = subprocess.run(servekit_command("serve", *args), capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
