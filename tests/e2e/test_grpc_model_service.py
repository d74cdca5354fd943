"""The simple gRPC API (modelserving.ModelService) through its generated stubs, over a real port."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np
import pytest

from servekit.grpc.generated import model_service_pb2 as pb
from servekit.grpc.generated import model_service_pb2_grpc
from tests.gate import Gate, wait_for

from .harness import ServerProcess
from .repos import onnx_expected
from .scrape import gauge


@pytest.fixture(scope="module")
def stub(grpc_server: ServerProcess) -> Iterator[model_service_pb2_grpc.ModelServiceStub]:
    with grpc.insecure_channel(grpc_server.grpc_url) as channel:
        yield model_service_pb2_grpc.ModelServiceStub(channel)


def _flat(rows: list[list[float]]) -> list[float]:
    return [value for row in rows for value in row]


def _softmax(row: list[float]) -> list[float]:
    exp = np.exp(np.array(row, dtype=np.float64))
    return (exp / exp.sum()).tolist()  # type: ignore[no-any-return]


def test_predict_uses_the_default_model_or_the_named_one(stub: model_service_pb2_grpc.ModelServiceStub) -> None:
    plain = stub.Predict(pb.PredictRequest(features=[3.0, 1.0]), timeout=10)
    assert plain.prediction == 0 and list(plain.probabilities) == [] and plain.latency_ms > 0
    full = stub.Predict(pb.PredictRequest(features=[1.0, 3.0], return_probabilities=True), timeout=10)
    assert full.prediction == 1
    assert list(full.probabilities) == pytest.approx(_softmax([1.0, 3.0]), rel=1e-5)
    x = np.array([[1.0, 2.0, 3.0, 4.0]])
    named = stub.Predict(pb.PredictRequest(features=x[0].tolist(), model="onnx_linear"), timeout=10)
    assert named.prediction == onnx_expected(x)[1][0]


def test_predict_errors_name_the_width_and_the_model(stub: model_service_pb2_grpc.ModelServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as wrong_width:
        stub.Predict(pb.PredictRequest(features=[1.0, 2.0, 3.0]), timeout=10)
    assert wrong_width.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "one row of 2" in wrong_width.value.details()
    with pytest.raises(grpc.RpcError) as unknown:
        stub.Predict(pb.PredictRequest(features=[1.0], model="no_such_model"), timeout=10)
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND and "no_such_model" in unknown.value.details()


def test_predict_stream_answers_each_row_in_order(
    stub: model_service_pb2_grpc.ModelServiceStub, grpc_gates: dict[str, Gate], grpc_frontend: str) -> None:
    gate = grpc_gates["slow_classifier"]
    before = len(gate.batches())
    rows = [[1.0, 0.0], [0.0, 1.0], [5.0, 2.0], [2.0, 7.0]]
    answers = list(stub.PredictStream(pb.PredictRequest(features=_flat(rows), return_probabilities=True),
                                      timeout=30))
    assert [a.prediction for a in answers] == [0, 1, 0, 1]
    for answer, row in zip(answers, rows, strict=True):
        assert list(answer.probabilities) == pytest.approx(_softmax(row), rel=1e-5)
    assert gate.batches()[before:] == [[1.0, 0.0, 5.0, 2.0]]  # the rows arrive in one loop turn: one batch


def test_a_cancelled_stream_leaves_its_queued_rows_unrun(
    stub: model_service_pb2_grpc.ModelServiceStub, grpc_gates: dict[str, Gate], grpc_server: ServerProcess,
) -> None:
    gate = grpc_gates["slow_classifier"]
    rows = [[100.0 + i, 0.0] for i in range(20)]
    ours = {100.0 + i for i in range(20)} | {300.0}  # another test's late batch may reach the gate too
    with gate.held() as before:
        call = stub.PredictStream(pb.PredictRequest(features=_flat(rows)), timeout=60)
        first = _batch_holding(gate, 100.0)  # 100..107 in the model; 108..119 wait
        gate.allow(first + 1)
        assert next(call).prediction == 0  # the first batch answered; 108..115 now in the model, 116..119 wait
        _batch_holding(gate, 108.0)
        call.cancel()
        wait_for(lambda: gauge(grpc_server.metrics_url, "servekit_inflight_requests", "slow_classifier") == 0,
                 "the server to see the cancellation")
    after = stub.PredictStream(pb.PredictRequest(features=[300.0, 0.0]), timeout=30)
    assert [answer.prediction for answer in after] == [0]
    ran = [batch for batch in gate.batches()[before:] if set(batch) & ours]
    assert ran == [[100.0 + i for i in range(8)], [108.0 + i for i in range(8)], [300.0]], ran  # never 116..119


def _batch_holding(gate: Gate, value: float) -> int:
    """The number (from 0) of the first batch at the gate holding ``value``, once it has arrived."""
    found: list[int] = []

    def arrived() -> bool:
        found[:] = [number for number, batch in enumerate(gate.batches()) if value in batch][:1]
        return bool(found)

    wait_for(arrived, f"a batch holding {value:g} at the gate")
    return found[0]


def test_predict_bidi_pipelines_answers_in_order_and_ends_on_error(
    stub: model_service_pb2_grpc.ModelServiceStub, grpc_gates: dict[str, Gate], grpc_server: ServerProcess,
) -> None:
    gate = grpc_gates["slow_classifier"]
    rows = [[200.0, 300.0], [201.0, 0.0], [0.0, 202.0], [203.0, 0.0]]
    with gate.held() as before:
        call = stub.PredictBidi(iter(pb.PredictRequest(features=row) for row in rows), timeout=60)
        # The first batch is what had arrived when the idle model took it (the first row, or more
        # when several came in one read); the rest wait behind it, read off the stream: pipelined.
        first = gate.wait_batches(before + 1)[before]
        wait_for(lambda: gauge(grpc_server.metrics_url, "servekit_queue_depth", "slow_classifier") == 4 - len(first),
                 "the other rows read off the stream and queued")
    answers = list(call)
    assert [a.prediction for a in answers] == [1, 0, 1, 0]
    batches = gate.batches()[before:]
    assert len(batches) <= 2 and [value for batch in batches for value in batch] == [200.0, 201.0, 0.0, 203.0]
    requests = [pb.PredictRequest(features=[1.0, 0.0]), pb.PredictRequest(features=[1.0]),
                pb.PredictRequest(features=[0.0, 1.0])]
    call = stub.PredictBidi(iter(requests), timeout=10)
    assert next(call).prediction == 0
    with pytest.raises(grpc.RpcError) as ended:
        next(call)
    assert ended.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "one row of 2" in ended.value.details()
    # A row of the failed call may still be queued or running: one more request through the model (one
    # instance, first in first out) waits it out, so none of it reaches the gate during another test.
    assert [a.prediction for a in stub.PredictStream(pb.PredictRequest(features=[999.0, 0.0]), timeout=30)] == [0]
