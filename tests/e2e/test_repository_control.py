"""The repository extension's load and unload over real sockets: the management token is asked for
over HTTP (tritonclient's headers) and gRPC (metadata); without a management API they are refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from .harness import ServerProcess
from .managed import ManagedServer
from .repos import write_onnx_model


@pytest.fixture(scope="module")
def managed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedServer]:
    folder = tmp_path_factory.mktemp("control")
    write_onnx_model(folder / "models")
    server = ManagedServer(folder / "models", folder / "server.log").start()
    try:
        yield server
    finally:
        server.stop()


def test_http_load_and_unload_need_the_management_token(managed: ManagedServer) -> None:
    client = httpclient.InferenceServerClient(managed.url)
    auth = {"Authorization": f"Bearer {managed.token}"}
    with pytest.raises(InferenceServerException) as missing:
        client.unload_model("onnx_linear")
    assert missing.value.status() == "401" and "needs the management token" in missing.value.message()
    with pytest.raises(InferenceServerException) as wrong:
        client.unload_model("onnx_linear", headers={"Authorization": "Bearer not-the-token"})
    assert wrong.value.status() == "403"
    assert client.is_model_ready("onnx_linear")  # nothing changed
    client.unload_model("onnx_linear", headers=auth)
    assert not client.is_model_ready("onnx_linear")
    client.load_model("onnx_linear", headers=auth)
    assert client.is_model_ready("onnx_linear")
    index = httpx.post(f"{managed.base_url}/v2/repository/index", timeout=10)  # reading stays open
    assert index.status_code == 200 and index.json()[0]["name"] == "onnx_linear"


def test_grpc_load_and_unload_need_the_management_token(managed: ManagedServer) -> None:
    client = grpcclient.InferenceServerClient(managed.grpc_url)
    with pytest.raises(InferenceServerException) as missing:
        client.unload_model("onnx_linear")
    assert missing.value.status() == "StatusCode.UNAUTHENTICATED"
    with pytest.raises(InferenceServerException) as wrong:
        client.load_model("onnx_linear", headers={"authorization": "Bearer nope"})
    assert wrong.value.status() == "StatusCode.PERMISSION_DENIED"
    client.unload_model("onnx_linear", headers={"authorization": f"Bearer {managed.token}"})
    assert not client.is_model_ready("onnx_linear")
    client.load_model("onnx_linear", headers={"authorization": f"Bearer {managed.token}"})
    assert client.is_model_ready("onnx_linear")
    assert client.get_model_repository_index().models[0].name == "onnx_linear"
    client.close()


def test_without_a_management_api_they_are_refused(tmp_path: Path) -> None:
    write_onnx_model(tmp_path / "models")
    server = ServerProcess(tmp_path / "models", tmp_path / "server.log").start()
    try:
        answer = httpx.post(f"{server.base_url}/v2/repository/models/onnx_linear/unload", timeout=10)
        assert answer.status_code == 403 and "--repository-control open" in answer.json()["error"]
        with grpc.insecure_channel(server.grpc_url) as channel:
            unload = channel.unary_unary("/inference.GRPCInferenceService/RepositoryModelUnload",
                                         request_serializer=lambda raw: raw, response_deserializer=lambda raw: raw)
            with pytest.raises(grpc.RpcError) as refused:
                unload(b"\x12\x0bonnx_linear", timeout=10)  # RepositoryModelUnloadRequest{model_name: 2}
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert httpx.get(f"{server.base_url}/v2/models/onnx_linear/ready", timeout=10).status_code == 200
    finally:
        server.stop()
