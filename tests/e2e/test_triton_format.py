"""A Triton model repository (config.pbtxt, python backend, ONNX, libtorch) served by servekit,
judged by the official tritonclient over HTTP and gRPC. Expected documents are written out
as tritonserver 2.51 answers for the same models (see tests/formats/triton/README.md)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.builders import WEIGHTS

from .harness import ServerProcess
from .triton_repos import build_triton_repository


@pytest.fixture(scope="module")
def marker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("marker") / "executes.txt"


@pytest.fixture(scope="module")
def server(marker: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repository = build_triton_repository(tmp_path_factory.mktemp("triton") / "models", marker)
    process = ServerProcess(repository, tmp_path_factory.mktemp("logs") / "triton.log")
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture()
def http(server: ServerProcess) -> Iterator[httpclient.InferenceServerClient]:
    client = httpclient.InferenceServerClient(server.url)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture()
def grpc(server: ServerProcess) -> Iterator[grpcclient.InferenceServerClient]:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        yield client
    finally:
        client.close()


def _x(value: float, rows: int = 1, module: Any = grpcclient) -> Any:
    tensor = module.InferInput("X", [rows, 1], "FP32")
    tensor.set_data_from_numpy(np.full((rows, 1), value, dtype=np.float32))
    return tensor


def test_metadata_as_triton_gives_it(http: httpclient.InferenceServerClient) -> None:
    assert http.get_model_metadata("pybatch") == {
        "name": "pybatch", "versions": ["1"], "platform": "python",
        "inputs": [{"name": "X", "datatype": "FP32", "shape": [-1, 1]}],
        "outputs": [{"name": "Y", "datatype": "FP32", "shape": [-1, 1]},
                    {"name": "PARAMS", "datatype": "BYTES", "shape": [-1, 1]}]}
    assert http.get_model_metadata("pyfull") == {
        "name": "pyfull", "versions": ["1"], "platform": "python",
        "inputs": [{"name": "X", "datatype": "INT32", "shape": [2, 3]},
                   {"name": "OFFSET", "datatype": "INT32", "shape": [1]}],
        "outputs": [{"name": "Y", "datatype": "INT32", "shape": [2, 3]}]}
    onnx = http.get_model_metadata("onnx_policy")
    assert (onnx["platform"], onnx["versions"]) == ("onnxruntime_onnx", ["1", "3"])


def test_config_as_triton_gives_it(http: httpclient.InferenceServerClient,
                                   grpc: grpcclient.InferenceServerClient) -> None:
    config = http.get_model_config("pybatch")
    assert {key: config[key] for key in ("name", "backend", "max_batch_size", "input", "output", "version_policy",
                                         "parameters", "dynamic_batching")} == {
        "name": "pybatch", "backend": "python", "max_batch_size": 8,
        "input": [{"name": "X", "data_type": "TYPE_FP32", "dims": [1]}],
        "output": [{"name": "Y", "data_type": "TYPE_FP32", "dims": [1]},
                   {"name": "PARAMS", "data_type": "TYPE_STRING", "dims": [1]}],
        "version_policy": {"latest": {"num_versions": 1}},
        "parameters": {"marker": {"string_value": config["parameters"]["marker"]["string_value"]}},
        "dynamic_batching": {"preferred_batch_size": [], "max_queue_delay_microseconds": 200000}}
    assert config["instance_group"] == [{"name": "pybatch_0", "count": 1, "kind": "KIND_CPU"}]
    full = http.get_model_config("pyfull")
    assert full["max_batch_size"] == 0 and full["input"][0]["dims"] == [2, 3] and "dynamic_batching" not in full
    assert full["input"][1] == {"name": "OFFSET", "data_type": "TYPE_INT32", "dims": [1], "optional": True}
    policy = grpc.get_model_config("onnx_policy", as_json=True)["config"]
    assert policy["version_policy"] == {"specific": {"versions": ["1", "3"]}}  # int64 as protobuf JSON strings
    assert policy["platform"] == "onnxruntime_onnx" and policy["backend"] == "onnxruntime"


def test_concurrent_requests_land_in_fewer_execute_calls(server: ServerProcess, marker: Path) -> None:
    answers: dict[int, Any] = {}
    earlier = marker.read_text().split() if marker.exists() else []

    def ask(index: int) -> None:
        with grpcclient.InferenceServerClient(server.grpc_url) as client:
            answers[index] = client.infer("pybatch", [_x(100.0 + index)]).as_numpy("Y")

    threads = [threading.Thread(target=ask, args=(index,)) for index in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert {index: answer.tolist() for index, answer in answers.items()} == {i: [[200.0 + 2 * i]] for i in range(16)}
    calls = [int(line) for line in marker.read_text().split()[len(earlier):]]
    assert sum(calls) == 16 and len(calls) < 16 and max(calls) > 1


def test_a_triton_error_fails_its_own_request_only(server: ServerProcess) -> None:
    results: dict[str, Any] = {}

    def ask(name: str, value: float) -> None:
        with grpcclient.InferenceServerClient(server.grpc_url) as client:
            try:
                results[name] = client.infer("pybatch", [_x(value)]).as_numpy("Y").tolist()
            except InferenceServerException as exc:
                results[name] = (exc.status(), exc.message())

    threads = [threading.Thread(target=ask, args=(name, value)) for name, value in
               [("good1", 1.0), ("bad", 13.0), ("good2", 2.0), ("good3", 3.0)]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results == {"good1": [[2.0]], "bad": ("StatusCode.INVALID_ARGUMENT", "13 is refused"),
                       "good2": [[4.0]], "good3": [[6.0]]}


def test_a_triton_error_over_http(http: httpclient.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as caught:
        http.infer("pybatch", [_x(13.0, module=httpclient)])
    assert (caught.value.status(), caught.value.message()) == ("400", "13 is refused")


def test_request_parameters_reach_the_model_as_triton_json(http: httpclient.InferenceServerClient) -> None:
    result = http.infer("pybatch", [_x(1.0, module=httpclient)], parameters={"mode": "fast", "n": 3, "on": True})
    params = result.as_numpy("PARAMS")
    assert params is not None and json.loads(params[0][0]) == {"mode": "fast", "n": 3, "on": True}
    assert params[0][0] == b'{"mode":"fast","n":3,"on":true}'


def test_statistics_count_rows_and_requests(http: httpclient.InferenceServerClient) -> None:
    before = http.get_inference_statistics("pyfull")["model_stats"][0]
    x = httpclient.InferInput("X", [2, 3], "INT32")
    x.set_data_from_numpy(np.arange(6, dtype=np.int32).reshape(2, 3))
    assert http.infer("pyfull", [x]).as_numpy("Y").tolist() == [[1, 2, 3], [4, 5, 6]]
    after = http.get_inference_statistics("pyfull")["model_stats"][0]
    assert after["inference_stats"]["success"]["count"] == before["inference_stats"]["success"]["count"] + 1
    assert after["inference_count"] == before["inference_count"] + 1  # one request, no batch dimension
    offset = httpclient.InferInput("OFFSET", [1], "INT32")
    offset.set_data_from_numpy(np.array([10], dtype=np.int32))
    assert http.infer("pyfull", [x, offset]).as_numpy("Y").tolist() == [[10, 11, 12], [13, 14, 15]]
    # pybatch's own request, so the check holds in any test order (random order ran it first).
    assert http.infer("pybatch", [_x(1.0, rows=3, module=httpclient)]).as_numpy("Y").shape == (3, 1)
    rows = http.get_inference_statistics("pybatch")["model_stats"][0]
    assert rows["inference_count"] >= rows["inference_stats"]["success"]["count"] + 2 > 2


def test_without_dynamic_batching_statistics_still_count_rows(http: httpclient.InferenceServerClient) -> None:
    """As tritonserver 2.51 counts them: two requests of 3 rows to a max_batch_size 4 model without
    dynamic_batching make inference_count 6, execution_count 2, and two batches of size 3."""
    before = http.get_inference_statistics("pyplain")["model_stats"][0]
    x = httpclient.InferInput("X", [3, 2], "FP32")
    x.set_data_from_numpy(np.arange(6, dtype=np.float32).reshape(3, 2))
    for _ in range(2):
        assert http.infer("pyplain", [x]).as_numpy("Y").tolist() == [[0, 2], [4, 6], [8, 10]]
    after = http.get_inference_statistics("pyplain")["model_stats"][0]
    assert after["inference_count"] - before["inference_count"] == 6
    assert after["execution_count"] - before["execution_count"] == 2
    sizes = {entry["batch_size"]: int(entry["compute_infer"]["count"]) for entry in after["batch_stats"]}
    earlier = {entry["batch_size"]: int(entry["compute_infer"]["count"]) for entry in before["batch_stats"]}
    assert sizes.get(3, 0) - earlier.get(3, 0) == 2 and 1 not in sizes


def test_onnx_version_outside_the_policy_is_not_found(http: httpclient.InferenceServerClient,
                                                      grpc: grpcclient.InferenceServerClient) -> None:
    x = httpclient.InferInput("x", [1, 4], "FP32")
    x.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
    for version in ("1", "3"):
        y = http.infer("onnx_policy", [x], model_version=version).as_numpy("y")
        np.testing.assert_allclose(y, np.ones((1, 4), dtype=np.float32) @ WEIGHTS, rtol=1e-6)
    with pytest.raises(InferenceServerException) as caught:
        http.infer("onnx_policy", [x], model_version="2")
    assert caught.value.status() == "404"
    with pytest.raises(InferenceServerException) as from_grpc:
        grpc.get_model_metadata("onnx_policy", "2")
    assert from_grpc.value.status() == "StatusCode.NOT_FOUND"
    assert http.is_model_ready("onnx_policy", "2") is False


def test_libtorch_tensors_by_index(grpc: grpcclient.InferenceServerClient) -> None:
    first = grpcclient.InferInput("INPUT__0", [1, 2], "FP32")
    first.set_data_from_numpy(np.array([[1.0, 2.0]], dtype=np.float32))
    second = grpcclient.InferInput("INPUT__1", [1, 2], "FP32")
    second.set_data_from_numpy(np.array([[3.0, 4.0]], dtype=np.float32))
    assert grpc.infer("libtorch", [second, first]).as_numpy("OUTPUT__0").tolist() == [[31.0, 42.0]]


AUTO_COMPLETED = '''
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    @staticmethod
    def auto_complete_config(config):
        config.set_max_batch_size(4)
        config.add_input({"name": "NAME", "data_type": "TYPE_FP32", "dims": [2]})
        config.add_output({"name": "Y", "data_type": "TYPE_FP32", "dims": [2]})
        return config

    def execute(self, requests):
        doubled = [pb_utils.get_input_tensor_by_name(r, "NAME").as_numpy() * 2 for r in requests]
        return [pb_utils.InferenceResponse([pb_utils.Tensor("Y", y)]) for y in doubled]
'''


def _input_names(client: httpclient.InferenceServerClient) -> list[str]:
    return [tensor["name"] for tensor in client.get_model_metadata("auto")["inputs"]]


@pytest.mark.parametrize("reload", ["repository load", "poll"])
def test_auto_complete_config_runs_again_when_the_model_is_reloaded(tmp_path: Path, reload: str) -> None:
    """As tritonserver 2.51 does on a repository load (checked: an edited model.py's hook renamed the input):
    the hook of the model.py on disk runs again when the model is loaded through the repository
    extension, and when the poller reloads it."""
    model_file = tmp_path / "models" / "auto" / "1" / "model.py"
    model_file.parent.mkdir(parents=True)
    (tmp_path / "models" / "auto" / "config.pbtxt").write_text('backend: "python"\n')
    model_file.write_text(AUTO_COMPLETED.replace("NAME", "X"))
    how = ("--repository-control", "open") if reload == "repository load" else ("--poll-interval", "0.2")
    process = ServerProcess(tmp_path / "models", tmp_path / "server.log", *how)
    process.start()
    client = httpclient.InferenceServerClient(process.url)
    try:
        assert _input_names(client) == ["X"]
        model_file.write_text(AUTO_COMPLETED.replace("NAME", "Z"))
        if reload == "repository load":
            client.load_model("auto")
        deadline = time.monotonic() + 60
        while _input_names(client) != ["Z"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _input_names(client) == ["Z"]
        x = httpclient.InferInput("Z", [1, 2], "FP32")
        x.set_data_from_numpy(np.array([[1.0, 2.0]], dtype=np.float32))
        assert client.infer("auto", [x]).as_numpy("Y").tolist() == [[2.0, 4.0]]
    finally:
        client.close()
        process.stop()
