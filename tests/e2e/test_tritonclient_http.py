"""The official Triton HTTP client against a real servekit process: the client is the judge."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

import servekit
from tests.gate import Gate, wait_for

from .harness import ServerProcess
from .repos import DATATYPES, FAULTY_MAGIC, onnx_expected
from .scrape import gauge

Arrays = dict[str, np.ndarray[Any, Any]]


def _integer_rows(dtype: type[np.integer[Any]]) -> np.ndarray[Any, Any]:
    info = np.iinfo(dtype)
    return np.array([[info.min, info.max, 7], [info.max - 1, info.min + 1, 0]], dtype=dtype)


def _values(binary: bool) -> Arrays:
    """Two rows of three values per datatype, with each type's extremes; the binary path also
    carries what JSON cannot (NaN, infinities, bytes that are not UTF-8)."""
    f16 = np.finfo(np.float16)
    f32 = np.finfo(np.float32)
    f64 = np.finfo(np.float64)
    special = np.inf if binary else 2.5
    values: Arrays = {
        "BOOL": np.array([[True, False, True], [False, False, True]]),
        "UINT8": _integer_rows(np.uint8),
        "UINT16": _integer_rows(np.uint16),
        "UINT32": _integer_rows(np.uint32),
        "UINT64": _integer_rows(np.uint64),
        "INT8": _integer_rows(np.int8),
        "INT16": _integer_rows(np.int16),
        "INT32": _integer_rows(np.int32),
        "INT64": _integer_rows(np.int64),
        "FP16": np.array([[f16.max, f16.min, 0.0999], [f16.smallest_subnormal, -0.0, special]], dtype=np.float16),
        "FP32": np.array([[f32.max, f32.min, 0.1], [f32.smallest_subnormal, -1.5, -special]], dtype=np.float32),
        "FP64": np.array([[f64.max, f64.min, 0.1], [f64.smallest_subnormal, 1 / 3, special]], dtype=np.float64),
        "BYTES": np.array(
            [[b"hello", b"", "gr\u00fc\u00dfe \u2713".encode()], [b"a,b", b'{"json": 1}', b"x" * 300]], dtype=np.object_
        ),
    }
    if binary:
        values["FP32"][1, 1] = np.nan
        values["BYTES"][1, 0] = b"\x00\xff\xfe raw"
    return values


def _inputs(values: Arrays, binary: bool, prefix: str = "IN_") -> list[httpclient.InferInput]:
    inputs = []
    for datatype, array in values.items():
        tensor = httpclient.InferInput(f"{prefix}{datatype}", list(array.shape), datatype)
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    return inputs


def _error(call: Any, *args: Any, **kwargs: Any) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        call(*args, **kwargs)
    return caught.value


@pytest.fixture(scope="module")
def client(main_server: ServerProcess) -> Iterator[httpclient.InferenceServerClient]:
    with httpclient.InferenceServerClient(main_server.url, concurrency=8, network_timeout=30.0) as triton:
        yield triton


# -- health and metadata ---------------------------------------------------------------------------


def test_server_live_and_ready(client: httpclient.InferenceServerClient) -> None:
    assert client.is_server_live() is True
    assert client.is_server_ready() is True


def test_server_metadata(client: httpclient.InferenceServerClient) -> None:
    metadata = client.get_server_metadata()
    assert metadata["name"] == "servekit"
    assert metadata["version"] == servekit.__version__
    assert {"binary_tensor_data", "model_repository", "statistics"} <= set(metadata["extensions"])


def test_model_metadata_of_the_identity_handler(client: httpclient.InferenceServerClient) -> None:
    metadata = client.get_model_metadata("identity")
    assert metadata["name"] == "identity"
    assert metadata["versions"] == ["1"]
    assert metadata["platform"] == "python"
    assert metadata["inputs"] == [{"name": f"IN_{dt}", "datatype": dt, "shape": [-1, 3]} for dt in DATATYPES]
    assert metadata["outputs"] == [{"name": f"OUT_{dt}", "datatype": dt, "shape": [-1, 3]} for dt in DATATYPES]


def test_model_metadata_of_one_onnx_version(client: httpclient.InferenceServerClient) -> None:
    metadata = client.get_model_metadata("onnx_linear", model_version="1")
    assert metadata["versions"] == ["1", "2"]
    assert metadata["platform"] == "onnxruntime_onnx"
    assert metadata["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert metadata["outputs"] == [
        {"name": "y", "datatype": "FP32", "shape": [-1, 3]},
        {"name": "label", "datatype": "INT64", "shape": [-1]},
    ]


def test_model_config(client: httpclient.InferenceServerClient) -> None:
    config = client.get_model_config("identity")
    assert config["name"] == "identity"
    assert config["max_batch_size"] == 8
    by_name = {entry["name"]: entry for entry in config["input"]}
    assert by_name["IN_BYTES"] == {"name": "IN_BYTES", "data_type": "TYPE_STRING", "dims": [3]}
    assert by_name["IN_FP16"]["data_type"] == "TYPE_FP16"
    assert [entry["name"] for entry in config["output"]] == [f"OUT_{dt}" for dt in DATATYPES]
    onnx = client.get_model_config("onnx_linear", model_version="1")
    assert onnx["max_batch_size"] == 16
    assert onnx["input"] == [{"name": "x", "data_type": "TYPE_FP32", "dims": [4]}]
    assert onnx["version_policy"] == {"all": {}}  # the config's policy, as Triton reports it


def test_model_ready_by_model_and_version(client: httpclient.InferenceServerClient) -> None:
    assert client.is_model_ready("identity") is True
    assert client.is_model_ready("onnx_linear", "1") is True
    assert client.is_model_ready("onnx_linear", "2") is True
    assert client.is_model_ready("onnx_linear", "3") is False
    assert client.is_model_ready("no_such_model") is False
    assert client.is_model_ready("broken") is False


def test_repository_index_shows_the_broken_model_and_its_reason(client: httpclient.InferenceServerClient) -> None:
    index = client.get_model_repository_index()
    rows = {(row["name"], row.get("version")): row for row in index}
    for key in [("identity", "1"), ("onnx_linear", "1"), ("onnx_linear", "2"), ("faulty", "1"), ("slow", "1")]:
        assert rows[key]["state"] == "READY", rows[key]
    broken = rows[("broken", None)]
    assert broken["state"] == "UNAVAILABLE"
    assert "config.yaml" in broken["reason"]
    assert "max_batch_size" in broken["reason"]
    assert "no_such_field" in broken["reason"]


# -- inference: every datatype, JSON and binary ------------------------------------------------------


MODES = ("json", "binary", "binary-default-outputs")


@pytest.fixture(scope="module")
def identity_results(client: httpclient.InferenceServerClient) -> dict[str, tuple[Arrays, httpclient.InferResult]]:
    """One infer per transfer mode, sending every datatype at once (the identity model needs them all)."""
    results = {}
    for mode in MODES:
        binary = mode != "json"
        values = _values(binary)
        outputs = None
        if mode != "binary-default-outputs":  # no outputs: tritonclient asks for binary_data_output
            outputs = [httpclient.InferRequestedOutput(f"OUT_{dt}", binary_data=binary) for dt in DATATYPES]
        results[mode] = (values, client.infer("identity", _inputs(values, binary), outputs=outputs))
    return results


@pytest.mark.parametrize("datatype", DATATYPES)
@pytest.mark.parametrize("mode", MODES)
def test_every_datatype_round_trips_exactly(
    identity_results: dict[str, tuple[Arrays, httpclient.InferResult]], mode: str, datatype: str
) -> None:
    values, result = identity_results[mode]
    sent = values[datatype]
    output = result.get_output(f"OUT_{datatype}")
    assert output is not None
    assert output["datatype"] == datatype
    assert output["shape"] == [2, 3]
    if mode == "json":
        assert "data" in output and "binary_data_size" not in output.get("parameters", {})
    else:
        assert "data" not in output and output["parameters"]["binary_data_size"] > 0
    got = result.as_numpy(f"OUT_{datatype}")
    assert got.shape == sent.shape
    if datatype == "BYTES" and mode == "json":
        # tritonclient reads JSON BYTES back as str elements.
        assert got.tolist() == [[element.decode() for element in row] for row in sent]
    elif datatype == "BYTES":
        assert got.tolist() == sent.tolist()
    else:
        assert got.dtype == sent.dtype
        np.testing.assert_array_equal(got, sent, strict=True)
        if datatype.startswith("FP"):
            assert np.signbit(got).tolist() == np.signbit(sent).tolist()  # -0.0 stays -0.0


def test_response_names_model_version_and_echoes_the_request_id(client: httpclient.InferenceServerClient) -> None:
    x = np.array([[1, 2, 3, 4]], dtype=np.float32)
    inputs = [httpclient.InferInput("x", [1, 4], "FP32").set_data_from_numpy(x)]
    result = client.infer("onnx_linear", inputs, request_id="req-42/\u00e9")
    response = result.get_response()
    assert response["id"] == "req-42/\u00e9"
    assert response["model_name"] == "onnx_linear"
    assert response["model_version"] == "2"  # the latest version is the default
    no_id = client.infer("onnx_linear", inputs).get_response()
    assert "id" not in no_id


def test_only_the_requested_output_comes_back(client: httpclient.InferenceServerClient) -> None:
    values = _values(binary=False)
    outputs = [httpclient.InferRequestedOutput("OUT_INT16", binary_data=False)]
    result = client.infer("identity", _inputs(values, binary=False), outputs=outputs)
    assert [output["name"] for output in result.get_response()["outputs"]] == ["OUT_INT16"]
    np.testing.assert_array_equal(result.as_numpy("OUT_INT16"), values["INT16"])
    assert result.as_numpy("OUT_FP32") is None


def test_outputs_may_mix_json_and_binary(client: httpclient.InferenceServerClient) -> None:
    x = np.array([[0.5, -1, 2, 0], [3, 3, 3, 3]], dtype=np.float32)
    inputs = [httpclient.InferInput("x", [2, 4], "FP32").set_data_from_numpy(x, binary_data=False)]
    outputs = [httpclient.InferRequestedOutput("label", binary_data=False), httpclient.InferRequestedOutput("y")]
    result = client.infer("onnx_linear", inputs, outputs=outputs)
    assert "data" in result.get_output("label")
    assert "binary_data_size" in result.get_output("y")["parameters"]
    probabilities, labels = onnx_expected(x, version=2)
    np.testing.assert_array_equal(result.as_numpy("label"), labels)
    np.testing.assert_allclose(result.as_numpy("y"), probabilities, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_request_bodies(client: httpclient.InferenceServerClient, algorithm: str) -> None:
    values = _values(binary=True)
    result = client.infer("identity", _inputs(values, binary=True), request_compression_algorithm=algorithm,
                          response_compression_algorithm=algorithm)
    for datatype in ("UINT64", "FP16", "BYTES"):
        assert result.as_numpy(f"OUT_{datatype}").tolist() == values[datatype].tolist()


@pytest.mark.parametrize("version", [1, 2])
def test_infer_against_a_specific_version(client: httpclient.InferenceServerClient, version: int) -> None:
    x = np.array([[1, 0, 0, 0], [0, 0, 1, 0], [2, -1, 0.5, 1]], dtype=np.float32)
    inputs = [httpclient.InferInput("x", [3, 4], "FP32").set_data_from_numpy(x)]
    result = client.infer("onnx_linear", inputs, model_version=str(version))
    assert result.get_response()["model_version"] == str(version)
    probabilities, labels = onnx_expected(x, version)
    assert result.as_numpy("label").dtype == np.int64
    np.testing.assert_array_equal(result.as_numpy("label"), labels)
    np.testing.assert_allclose(result.as_numpy("y"), probabilities, rtol=1e-5, atol=1e-7)


def test_the_two_versions_really_differ(client: httpclient.InferenceServerClient) -> None:
    x = np.array([[1, 0, 0, 0]], dtype=np.float32)
    inputs = [httpclient.InferInput("x", [1, 4], "FP32").set_data_from_numpy(x)]
    labels = [client.infer("onnx_linear", inputs, model_version=v).as_numpy("label")[0] for v in ("1", "2")]
    assert labels == [0, 2]


# -- batching: concurrent callers each get their own rows -----------------------------------------------


def test_concurrent_requests_are_batched_and_each_caller_gets_its_own_rows(
    client: httpclient.InferenceServerClient, main_gate: Gate, main_server: ServerProcess
) -> None:
    before = client.get_inference_statistics("gated")["model_stats"][0]
    sent = [np.arange(n * 100, n * 100 + 1 + n % 3, dtype=np.int32).reshape(-1, 1) for n in range(8)]

    def call(x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        # One client per caller, on its own thread: tritonclient.http's async_infer runs on gevent
        # greenlets, which make no progress while this thread waits on something gevent does not know.
        with httpclient.InferenceServerClient(main_server.url, network_timeout=60.0) as own:
            tensor = httpclient.InferInput("x", list(x.shape), "INT32").set_data_from_numpy(x)
            answer: np.ndarray[Any, Any] = own.infer("gated", [tensor]).as_numpy("y")
            return answer

    with ThreadPoolExecutor(len(sent)) as pool, main_gate.held() as arrived_before:
        pending = [pool.submit(call, sent[0])]
        main_gate.wait_batches(arrived_before + 1)  # the model is busy with the first request ...
        pending += [pool.submit(call, x) for x in sent[1:]]
        wait_for(lambda: gauge(main_server.metrics_url, "servekit_queue_depth", "gated") == len(sent) - 1,
                 "the other seven queued")  # ... so the other seven wait together
    for x, request in zip(sent, pending, strict=True):
        np.testing.assert_array_equal(request.result(timeout=60), x)
    after = client.get_inference_statistics("gated")["model_stats"][0]
    requests = after["inference_stats"]["success"]["count"] - before["inference_stats"]["success"]["count"]
    rows = after["inference_count"] - before["inference_count"]
    batches = after["execution_count"] - before["execution_count"]
    assert requests == len(sent)
    assert rows == sum(len(x) for x in sent)
    # 1 row alone, then the 14 rows of the seven that waited (queued in any order): batches of at most
    # 8 rows, packed in order, so the first holds at least 6 and the rest fit in one more: 3 batches, not 8.
    assert batches == 3, after
    first, *waited = [len(batch) for batch in main_gate.batches()[arrived_before:]]
    assert first == 1 and len(waited) == 2 and sum(waited) == 14 and all(6 <= rows <= 8 for rows in waited), waited


def test_a_failing_batch_fails_only_its_own_requests(client: httpclient.InferenceServerClient) -> None:
    sent = [np.array([[FAULTY_MAGIC if n % 3 == 0 else float(n)]], dtype=np.float32) for n in range(9)]
    pending = [
        client.async_infer("faulty", [httpclient.InferInput("x", [1, 1], "FP32").set_data_from_numpy(x)])
        for x in sent
    ]
    for x, request in zip(sent, pending, strict=True):
        if x[0, 0] == FAULTY_MAGIC:
            error = _error(request.get_result, timeout=30)
            assert error.status() == "500"
            assert "unlucky input" in error.message()
            assert "Traceback" not in error.message() and "secret" not in error.message()
        else:
            np.testing.assert_array_equal(request.get_result(timeout=30).as_numpy("y"), x * 2)
    assert client.is_server_ready()
    assert client.is_model_ready("faulty")


# -- statistics --------------------------------------------------------------------------------------


def test_inference_statistics_count_requests_and_rows(client: httpclient.InferenceServerClient) -> None:
    def stats() -> dict[str, Any]:
        entries: list[dict[str, Any]] = client.get_inference_statistics("onnx_linear", "1")["model_stats"]
        assert len(entries) == 1
        return entries[0]

    before = stats()
    assert before["name"] == "onnx_linear" and before["version"] == "1"
    x = np.ones((2, 4), dtype=np.float32)
    for _ in range(3):
        client.infer("onnx_linear", [httpclient.InferInput("x", [2, 4], "FP32").set_data_from_numpy(x)],
                     model_version="1")
    with pytest.raises(InferenceServerException):
        client.infer("onnx_linear", [httpclient.InferInput("x", [2, 4], "FP64").set_data_from_numpy(
            x.astype(np.float64))], model_version="1")
    after = stats()
    assert after["inference_stats"]["success"]["count"] == before["inference_stats"]["success"]["count"] + 3
    assert after["inference_stats"]["fail"]["count"] == before["inference_stats"]["fail"]["count"] + 1
    assert after["inference_count"] == before["inference_count"] + 6
    assert after["execution_count"] == before["execution_count"] + 3
    assert after["inference_stats"]["success"]["ns"] > before["inference_stats"]["success"]["ns"]
    assert after["last_inference"] >= before["last_inference"] and after["last_inference"] > 0
    sizes = {entry["batch_size"]: entry["compute_infer"]["count"] for entry in after["batch_stats"]}
    assert sizes.get(2, 0) >= 3

    every = client.get_inference_statistics()["model_stats"]
    assert {("onnx_linear", "1"), ("onnx_linear", "2"), ("identity", "1")} <= {(s["name"], s["version"]) for s in every}


# -- repository extension: unload and load ---------------------------------------------------------------


def test_unload_then_load_again(client: httpclient.InferenceServerClient) -> None:
    x = np.array([[1, 2, 3, 4]], dtype=np.float32)
    inputs = [httpclient.InferInput("x", [1, 4], "FP32").set_data_from_numpy(x)]
    assert client.is_model_ready("reloadable")
    client.unload_model("reloadable")
    try:
        assert client.is_model_ready("reloadable") is False
        assert client.is_model_ready("reloadable", "1") is False
        error = _error(client.infer, "reloadable", inputs)
        assert error.status() == "503"
        assert "reloadable" in error.message()
        rows = [row for row in client.get_model_repository_index() if row["name"] == "reloadable"]
        assert [row["state"] for row in rows] == ["UNAVAILABLE"]
        assert client.is_model_ready("onnx_linear")  # other models are untouched
    finally:
        client.load_model("reloadable")
    assert client.is_model_ready("reloadable") is True
    assert client.is_model_ready("reloadable", "1") is True
    result = client.infer("reloadable", inputs, model_version="1")
    np.testing.assert_array_equal(result.as_numpy("label"), onnx_expected(x, 1)[1])


def test_load_errors(client: httpclient.InferenceServerClient) -> None:
    missing = _error(client.load_model, "no_such_folder")
    assert missing.status() == "404"
    assert "no_such_folder" in missing.message()
    broken = _error(client.load_model, "broken")
    assert broken.status() == "400"  # its config.yaml does not validate: ConfigError, 400 (a model that fails
    # to load for another reason is 503, see tests/http/test_oip_routes.py)
    assert "max_batch_size" in broken.message()
    assert client.is_server_ready()


# -- errors: status and a message naming the problem --------------------------------------------------------


def _x(datatype: str = "FP32", shape: tuple[int, ...] = (1, 4), name: str = "x") -> httpclient.InferInput:
    array = np.zeros(shape, dtype={"FP32": np.float32, "FP64": np.float64, "INT32": np.int32}[datatype])
    return httpclient.InferInput(name, list(shape), datatype).set_data_from_numpy(array)


def test_unknown_model_is_404(client: httpclient.InferenceServerClient) -> None:
    error = _error(client.infer, "no_such_model", [_x()])
    assert error.status() == "404"
    assert "no_such_model" in error.message()
    assert _error(client.get_model_metadata, "no_such_model").status() == "404"


def test_unknown_version_is_404(client: httpclient.InferenceServerClient) -> None:
    error = _error(client.infer, "onnx_linear", [_x()], model_version="9")
    assert error.status() == "404"
    assert "version" in error.message() and "9" in error.message()
    assert _error(client.get_model_metadata, "onnx_linear", "9").status() == "404"


@pytest.mark.parametrize("binary", [False, True])
def test_wrong_datatype_is_400(client: httpclient.InferenceServerClient, binary: bool) -> None:
    tensor = httpclient.InferInput("x", [1, 4], "FP64").set_data_from_numpy(
        np.zeros((1, 4), dtype=np.float64), binary_data=binary)
    error = _error(client.infer, "onnx_linear", [tensor])
    assert error.status() == "400"
    assert "'x'" in error.message() and "FP64" in error.message() and "FP32" in error.message()


@pytest.mark.parametrize("shape", [(1, 5), (4,), (1, 2, 2)])
def test_wrong_shape_is_400(client: httpclient.InferenceServerClient, shape: tuple[int, ...]) -> None:
    error = _error(client.infer, "onnx_linear", [_x(shape=shape)])
    assert error.status() == "400"
    assert "'x'" in error.message() and "shape" in error.message()


def test_missing_input_is_400(client: httpclient.InferenceServerClient) -> None:
    values = _values(binary=True)
    del values["BOOL"], values["BYTES"]
    error = _error(client.infer, "identity", _inputs(values, binary=True))
    assert error.status() == "400"
    assert "missing" in error.message()
    assert "IN_BOOL" in error.message() and "IN_BYTES" in error.message()


def test_unknown_input_and_output_names_are_400(client: httpclient.InferenceServerClient) -> None:
    error = _error(client.infer, "onnx_linear", [_x(), _x(name="z")])
    assert error.status() == "400" and "'z'" in error.message()
    error = _error(client.infer, "onnx_linear", [_x()], outputs=[httpclient.InferRequestedOutput("nope")])
    assert error.status() == "400" and "'nope'" in error.message()


def test_binary_size_that_does_not_fit_the_shape_is_400(client: httpclient.InferenceServerClient) -> None:
    tensor = httpclient.InferInput("x", [1, 4], "FP32").set_data_from_numpy(np.zeros((1, 4), dtype=np.float32))
    tensor.set_shape([2, 4])  # the header now claims 8 values; the body carries 4
    error = _error(client.infer, "onnx_linear", [tensor])
    assert error.status() == "400"
    assert "bytes" in error.message()


def test_model_that_failed_to_load_is_503_with_its_reason(client: httpclient.InferenceServerClient) -> None:
    error = _error(client.infer, "broken", [_x()])
    assert error.status() == "503"
    assert "broken" in error.message() and "max_batch_size" in error.message()


def test_the_model_raising_is_500_and_the_server_keeps_serving(client: httpclient.InferenceServerClient) -> None:
    bad = httpclient.InferInput("x", [1, 1], "FP32").set_data_from_numpy(np.array([[FAULTY_MAGIC]], dtype=np.float32))
    error = _error(client.infer, "faulty", [bad])
    assert error.status() == "500"
    assert "ValueError" in error.message() and "unlucky input" in error.message()
    good = httpclient.InferInput("x", [1, 1], "FP32").set_data_from_numpy(np.array([[4.0]], dtype=np.float32))
    assert client.infer("faulty", [good]).as_numpy("y").tolist() == [[8.0]]
