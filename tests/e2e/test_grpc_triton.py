"""The official Triton gRPC client against a real servekit process: the client is the judge."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

import servekit
from servekit.grpc.generated import inference_pb2, inference_pb2_grpc
from tests.gate import Gate, wait_for

from .harness import ServerProcess
from .repos import DATATYPES, FAULTY_MAGIC, onnx_expected
from .scrape import gauge

Arrays = dict[str, np.ndarray[Any, Any]]


def _values() -> Arrays:
    """Two rows of three values per datatype, with what only a binary encoding carries."""
    values: Arrays = {}
    for datatype in DATATYPES:
        if datatype == "BOOL":
            values[datatype] = np.array([[True, False, True], [False, False, True]])
        elif datatype == "BYTES":
            rows = [[b"hello", b"", b"\x00\xff raw"], [b"a,b", "gr\u00fc\u00dfe".encode(), b"x" * 300]]
            values[datatype] = np.array(rows, dtype=np.object_)
        elif datatype.startswith(("INT", "UINT")):
            dtype = np.dtype(datatype.lower())
            info = np.iinfo(dtype)
            values[datatype] = np.array([[info.min, info.max, 7], [info.max - 1, info.min + 1, 0]], dtype=dtype)
        else:
            dtype = np.dtype({"FP16": np.float16, "FP32": np.float32, "FP64": np.float64}[datatype])
            finfo = np.finfo(dtype)
            values[datatype] = np.array([[finfo.max, finfo.min, np.nan], [finfo.smallest_subnormal, -0.0, np.inf]],
                                        dtype=dtype)
    return values


def _input(name: str, array: np.ndarray[Any, Any], datatype: str) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def _x(values: list[list[float]]) -> grpcclient.InferInput:
    return _input("x", np.array(values, dtype=np.float32), "FP32")


def _error(call: Any, *args: Any, **kwargs: Any) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        call(*args, **kwargs)
    return caught.value


@pytest.fixture(scope="module")
def client(grpc_server: ServerProcess) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(grpc_server.grpc_url) as triton:
        yield triton


# -- health, metadata, configuration, statistics ----------------------------------------------------------


def test_health_and_server_metadata(client: grpcclient.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("onnx_linear") and client.is_model_ready("onnx_linear", "1")
    metadata = client.get_server_metadata(as_json=True)
    assert metadata["name"] == "servekit" and metadata["version"] == servekit.__version__
    assert {"binary_tensor_data", "model_repository", "statistics"} <= set(metadata["extensions"])


def test_model_metadata_and_config(client: grpcclient.InferenceServerClient) -> None:
    metadata = client.get_model_metadata("onnx_linear")
    assert list(metadata.versions) == ["1", "2"] and metadata.platform == "onnxruntime_onnx"
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [("x", "FP32", [-1, 4])]
    config = client.get_model_config("onnx_linear").config
    assert (config.name, config.max_batch_size) == ("onnx_linear", 16)
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [("x", 11, [4])]  # 11 = TYPE_FP32
    assert config.HasField("dynamic_batching") and config.instance_group[0].count == 1


def test_statistics_count_rows_and_batches(client: grpcclient.InferenceServerClient) -> None:
    def stats() -> Any:
        return client.get_inference_statistics("onnx_linear", "1").model_stats[0]

    before = stats()
    client.infer("onnx_linear", [_x([[1, 2, 3, 4], [0, 0, 0, 1]])], model_version="1")
    after = stats()
    assert after.inference_count - before.inference_count == 2
    assert after.inference_stats.success.count - before.inference_stats.success.count == 1
    everything = client.get_inference_statistics(as_json=True)["model_stats"]
    assert {"identity", "onnx_linear", "slow"} <= {entry["name"] for entry in everything}


# -- inference --------------------------------------------------------------------------------------------


def test_every_datatype_round_trips_as_raw_contents(client: grpcclient.InferenceServerClient) -> None:
    values = _values()
    inputs = [_input(f"IN_{dt}", array, dt) for dt, array in values.items()]
    result = client.infer("identity", inputs, request_id="every-type")
    assert result.get_response().id == "every-type"
    for datatype, array in values.items():
        got = result.as_numpy(f"OUT_{datatype}")
        assert got.shape == array.shape, datatype
        if datatype.startswith("FP"):
            np.testing.assert_array_equal(got, array, err_msg=datatype)  # NaN == NaN here; -0.0 keeps its bits
            assert got.dtype == array.dtype and np.signbit(got[1, 1])
        else:
            assert got.tolist() == array.tolist(), datatype


def test_infer_picks_versions_and_outputs(client: grpcclient.InferenceServerClient) -> None:
    x = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
    for version in (1, 2):
        result = client.infer("onnx_linear", [_input("x", x, "FP32")], model_version=str(version),
                              outputs=[grpcclient.InferRequestedOutput("label")])
        assert result.as_numpy("y") is None
        assert result.as_numpy("label").tolist() == onnx_expected(x, version)[1].tolist()


def test_typed_contents_are_accepted(grpc_server: ServerProcess) -> None:
    """tritonclient always sends raw contents; other clients (grpcurl) send typed ones."""
    with grpc.insecure_channel(grpc_server.grpc_url) as channel:
        stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = inference_pb2.ModelInferRequest(model_name="onnx_linear", id="typed")
        request.inputs.add(name="x", datatype="FP32", shape=[1, 4]).contents.fp32_contents.extend([1, 2, 3, 4])
        response = stub.ModelInfer(request, timeout=10)
    assert response.id == "typed" and [o.name for o in response.outputs] == ["y", "label"]
    labels = np.frombuffer(response.raw_output_contents[1], dtype="<i8")
    assert labels.tolist() == onnx_expected(np.array([[1, 2, 3, 4]]), 2)[1].tolist()


# -- errors: the one error table, as gRPC status codes ----------------------------------------------------


def test_errors_carry_the_table_status_and_a_clear_message(client: grpcclient.InferenceServerClient) -> None:
    x = _x([[1, 2, 3, 4]])
    unknown = _error(client.infer, "no_such_model", [x])
    assert unknown.status() == "StatusCode.NOT_FOUND" and "no_such_model" in unknown.message()
    assert _error(client.infer, "onnx_linear", [x], model_version="9").status() == "StatusCode.NOT_FOUND"
    assert _error(client.get_model_metadata, "no_such_model").status() == "StatusCode.NOT_FOUND"
    shape = _error(client.infer, "onnx_linear", [_x([[1, 2, 3]])])
    assert shape.status() == "StatusCode.INVALID_ARGUMENT" and "'x'" in shape.message()
    wrong_type = _error(client.infer, "onnx_linear", [_input("x", np.ones((1, 4), dtype=np.float64), "FP64")])
    assert wrong_type.status() == "StatusCode.INVALID_ARGUMENT" and "FP32" in wrong_type.message()
    failed = _error(client.infer, "faulty", [_x([[FAULTY_MAGIC]])])
    assert failed.status() == "StatusCode.INTERNAL"
    assert "ValueError" in failed.message() and "secret" not in failed.message()
    assert client.infer("faulty", [_x([[2.0]])]).as_numpy("y").tolist() == [[4.0]]  # the server goes on


def test_a_request_whose_deadline_passes_in_the_queue_never_runs(
    client: grpcclient.InferenceServerClient, grpc_gates: dict[str, Gate], grpc_server: ServerProcess
) -> None:
    gate = grpc_gates["gated"]
    with ThreadPoolExecutor(1) as pool, gate.held() as before:  # the gate opens before the pool waits
        busy = pool.submit(client.infer, "gated", [_input("x", np.array([[1]], np.int32), "INT32")])
        gate.wait_batches(before + 1)  # holds the only instance until the gate opens
        # Its answer can only be its deadline: the instance stays held until it has come.
        late = _error(client.infer, "gated", [_input("x", np.array([[2]], np.int32), "INT32")], client_timeout=0.5)
        assert late.status() == "StatusCode.DEADLINE_EXCEEDED"
        wait_for(lambda: gauge(grpc_server.metrics_url, "servekit_inflight_requests", "gated") == 1,
                 "the server to give up on the late request")
    busy.result(timeout=30)
    after = client.infer("gated", [_input("x", np.array([[3]], np.int32), "INT32")])
    assert after.as_numpy("y").tolist() == [[3]]
    assert gate.batches()[before:] == [[1.0], [3.0]]  # had the late request stayed queued, it would have run


def test_message_size_limit_fits_a_64_mib_tensor(client: grpcclient.InferenceServerClient) -> None:
    elements = 64 * 1024 * 1024 // 4
    result = client.infer("big", [_input("x", np.zeros(elements, dtype=np.float32), "FP32")])
    assert result.as_numpy("count").tolist() == [elements]
    too_big = _error(client.infer, "big", [_input("x", np.zeros(elements + 512 * 1024, dtype=np.float32), "FP32")])
    assert too_big.status() == "StatusCode.RESOURCE_EXHAUSTED"


# -- streaming --------------------------------------------------------------------------------------------


def test_stream_answers_many_in_flight_batches_them_and_survives_errors(
    client: grpcclient.InferenceServerClient, grpc_gates: dict[str, Gate], grpc_server: ServerProcess,
) -> None:
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    gate = grpc_gates["gated"]
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        with gate.held() as before:
            for i in range(6):
                client.async_stream_infer("gated", [_input("x", np.array([[10 + i]], np.int32), "INT32")],
                                          request_id=f"gated-{i}")
            client.async_stream_infer("faulty", [_x([[FAULTY_MAGIC]])], request_id="bad")
            client.async_stream_infer("no_such_model", [_x([[1.0]])], request_id="unknown")
            first = gate.wait_batches(before + 1)[before]
            # Many in flight on one stream: whatever the first batch took, the rest wait together.
            wait_for(lambda: gauge(grpc_server.metrics_url, "servekit_queue_depth", "gated") == 6 - len(first),
                     "the stream's other requests queued")
        got = [answers.get(timeout=30) for _ in range(8)]
        errors = sorted(error.message() for _, error in got if error is not None)
        assert len(errors) == 2 and "ValueError" in errors[0] and "no_such_model" in errors[1]
        ids = {result.get_response().id: result.as_numpy("y").tolist() for result, _ in got if result is not None}
        assert ids == {f"gated-{i}": [[10 + i]] for i in range(6)}
        client.async_stream_infer("onnx_linear", [_x([[1, 2, 3, 4]])], request_id="after-errors")
        result, error = answers.get(timeout=30)
        assert error is None and result.get_response().id == "after-errors"
    finally:
        client.stop_stream()
    batches = gate.batches()[before:]
    assert sorted(value for batch in batches for value in batch) == [10.0 + i for i in range(6)]
    assert len(batches) <= 2, batches  # requests of one stream ran together


# -- repository -------------------------------------------------------------------------------------------


def test_repository_index_load_and_unload(client: grpcclient.InferenceServerClient) -> None:
    index = {(m.name, m.version): m.state for m in client.get_model_repository_index().models}
    assert index[("onnx_linear", "2")] == "READY" and index[("identity", "1")] == "READY"
    client.unload_model("reloadable")
    assert not client.is_model_ready("reloadable")
    assert _error(client.infer, "reloadable", [_x([[1, 2, 3, 4]])]).status() == "StatusCode.UNAVAILABLE"
    client.load_model("reloadable")
    assert client.is_model_ready("reloadable")
    assert _error(client.load_model, "no_such_model").status() == "StatusCode.NOT_FOUND"
    overridden = _error(client.load_model, "reloadable", config='{"max_batch_size": 2}')
    assert overridden.status() == "StatusCode.INVALID_ARGUMENT"
