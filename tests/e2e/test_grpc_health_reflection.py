"""grpc.health.v1.Health (Check, Watch), modelserving.Health (Check, for clients generated from
servekit's own proto) and server reflection, as grpc_health_probe and grpcurl use them."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import grpc
import pytest
import tritonclient.grpc as grpcclient
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from servekit.grpc.generated import model_service_pb2, model_service_pb2_grpc

from .harness import ServerProcess

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture(scope="module")
def channel(grpc_server: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(grpc_server.grpc_url) as opened:
        yield opened


def _check(channel: grpc.Channel, service: str) -> int:
    status: int = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                             timeout=10).status
    return status


def test_check_reports_the_server_its_services_and_each_model(channel: grpc.Channel) -> None:
    assert _check(channel, "") == SERVING
    assert _check(channel, "inference.GRPCInferenceService") == SERVING
    assert _check(channel, "modelserving.ModelService") == SERVING
    assert _check(channel, "onnx_linear") == SERVING
    with pytest.raises(grpc.RpcError) as unknown:
        _check(channel, "no_such_model")
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


def _simple_check(channel: grpc.Channel, service: str) -> str:
    """modelserving.Health/Check through the stub generated from proto/model_service.proto; the status's name."""
    response = model_service_pb2_grpc.HealthStub(channel).Check(
        model_service_pb2.HealthCheckRequest(service=service), timeout=10)
    return model_service_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def test_modelserving_health_answers_as_the_standard_one(channel: grpc.Channel, grpc_server: ServerProcess) -> None:
    for service in ("", "modelserving.ModelService", "modelserving.Health", "inference.GRPCInferenceService",
                    "onnx_linear"):
        assert _simple_check(channel, service) == "SERVING", service
        assert _check(channel, service) == SERVING, service
    with pytest.raises(grpc.RpcError) as unknown:
        _simple_check(channel, "no_such_model")
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no_such_model" in (unknown.value.details() or "")
    with grpcclient.InferenceServerClient(grpc_server.grpc_url) as triton:
        triton.unload_model("reloadable")
        try:
            assert _simple_check(channel, "reloadable") == "NOT_SERVING"
            assert _check(channel, "reloadable") == NOT_SERVING
        finally:
            triton.load_model("reloadable")
    assert _simple_check(channel, "reloadable") == "SERVING"


def test_watch_follows_a_model_through_unload_and_load(
    channel: grpc.Channel, grpc_server: ServerProcess
) -> None:
    seen: queue.Queue[int] = queue.Queue()
    watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service="reloadable"),
                                                       timeout=20)

    def follow() -> None:
        try:
            for response in watch:
                seen.put(response.status)
        except grpc.RpcError:
            pass  # cancelled below

    reader = threading.Thread(target=follow)
    reader.start()
    try:
        assert seen.get(timeout=5) == SERVING
        with grpcclient.InferenceServerClient(grpc_server.grpc_url) as triton:
            triton.unload_model("reloadable")
            assert seen.get(timeout=5) == NOT_SERVING
            assert _check(channel, "reloadable") == NOT_SERVING
            triton.load_model("reloadable")
            assert seen.get(timeout=5) == SERVING
    finally:
        watch.cancel()
        reader.join(5)


def test_reflection_lists_every_service_and_describes_the_messages(channel: grpc.Channel, grpc_frontend: str) -> None:
    database = ProtoReflectionDescriptorDatabase(channel)
    assert set(database.get_services()) == {
        "inference.GRPCInferenceService",
        "modelserving.ModelService",
        "modelserving.Health",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }
    file = database.FindFileContainingSymbol("inference.ModelInferRequest")
    assert isinstance(file, descriptor_pb2.FileDescriptorProto) and file.package == "inference"
    request = next(message for message in file.message_type if message.name == "ModelInferRequest")
    assert {field.name: field.number for field in request.field}["raw_input_contents"] == 7
