"""What only the native gRPC front end (``--grpc-frontend native``) does, over real sockets.

Everything both front ends share runs against both: the gRPC tests' ``grpc_server`` fixture is
parametrized over them (tests/e2e/conftest.py), streams and reflection included, and so are the
drain and several workers on one port (test_grpc_server_process.py). Here: unknown methods,
request ids in the trailers, compression refused, bytes that are not HTTP/2, a call the client
gives up on, and TLS with ALPN (plain and mutual).
"""

from __future__ import annotations

import socket
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.utils import InferenceServerException

from servekit.grpc.generated import inference_pb2, inference_pb2_grpc
from servekit.grpc.native.server import _grpc_message, _timeout
from tests.gate import Gate

from .harness import ServerProcess
from .repos import write_onnx_model
from .test_tls import TlsServer
from .tls import make_certificates

pytestmark = pytest.mark.parametrize("grpc_frontend", ["native"], indirect=True)

NATIVE = ("--grpc-frontend", "native")


def _x(value: float = 1.0) -> list[grpcclient.InferInput]:
    tensor = grpcclient.InferInput("x", [1, 4], "FP32")
    tensor.set_data_from_numpy(np.full((1, 4), value, dtype=np.float32))
    return [tensor]


def _raw_method(channel: grpc.Channel, path: str) -> grpc.UnaryUnaryMultiCallable:
    return channel.unary_unary(path, request_serializer=lambda raw: raw, response_deserializer=lambda raw: raw)


def _live(url: str) -> bool:
    with grpc.insecure_channel(url, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
        stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
        return bool(stub.ServerLive(inference_pb2.ServerLiveRequest(), timeout=10).live)


def test_unknown_methods_are_unimplemented_and_the_connection_goes_on(
    grpc_server: ServerProcess, grpc_frontend: str
) -> None:
    with grpc.insecure_channel(grpc_server.grpc_url) as channel:
        with pytest.raises(grpc.RpcError) as unknown:
            _raw_method(channel, "/no.Such/Method")(b"", timeout=10)
        assert unknown.value.code() == grpc.StatusCode.UNIMPLEMENTED and "/no.Such/Method" in unknown.value.details()
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING  # a stream on the same connection
        watch.cancel()
        assert inference_pb2_grpc.GRPCInferenceServiceStub(channel).ServerLive(
            inference_pb2.ServerLiveRequest(), timeout=10).live


def test_request_ids_travel_back_in_the_trailers_of_answers_and_errors(
    grpc_server: ServerProcess, grpc_frontend: str
) -> None:
    with grpc.insecure_channel(grpc_server.grpc_url) as channel:
        stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
        _, call = stub.ServerLive.with_call(inference_pb2.ServerLiveRequest(), metadata=(("x-request-id", "mine-1"),),
                                            timeout=10)
        assert ("x-request-id", "mine-1") in call.trailing_metadata()
        with pytest.raises(grpc.RpcError) as failed:
            stub.ModelMetadata(inference_pb2.ModelMetadataRequest(name="no_such_model"),
                               metadata=(("x-request-id", "mine-2"),), timeout=10)
        assert failed.value.code() == grpc.StatusCode.NOT_FOUND
        assert ("x-request-id", "mine-2") in failed.value.trailing_metadata()
        _, fresh = stub.ServerLive.with_call(inference_pb2.ServerLiveRequest(), timeout=10)
        assert dict(fresh.trailing_metadata())["x-request-id"]  # one is made up when the client sent none


def test_gzip_and_deflate_requests_are_read_and_other_encodings_refused_by_name(
    grpc_server: ServerProcess, grpc_frontend: str
) -> None:
    with grpc.insecure_channel(grpc_server.grpc_url) as channel:
        stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = inference_pb2.ModelInferRequest(model_name="onnx_linear")
        request.inputs.add(name="x", datatype="FP32", shape=[1, 4])
        request.raw_input_contents.append(np.ones((1, 4), dtype="<f4").tobytes())
        for compression in (grpc.Compression.Gzip, grpc.Compression.Deflate):
            answer = stub.ModelInfer(request, compression=compression, timeout=10)
            assert answer.outputs[0].name == "y"
            streamed = stub.ModelStreamInfer(iter([request, request]), compression=compression, timeout=10)
            assert [response.error_message for response in streamed] == ["", ""]
        with pytest.raises(grpc.RpcError) as garbage:
            _raw_method(channel, "/inference.GRPCInferenceService/ModelInfer")(b"\xff" * 4, timeout=10)
        assert garbage.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert garbage.value.details() == "the request is not a valid inference.ModelInferRequest message"
    trailers = _raw_h2_call(grpc_server.grpc_url, "/inference.GRPCInferenceService/ServerLive",
                            [(b"grpc-encoding", b"snappy")], b"\x01" + (3).to_bytes(4, "big") + b"abc")
    assert trailers[b"grpc-status"] == b"12" and b"snappy" in trailers[b"grpc-message"]
    assert trailers[b"grpc-accept-encoding"] == b"identity,deflate,gzip"


def _raw_h2_call(url: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> dict[bytes, bytes]:
    """One call by hand over HTTP/2 (h2, no gRPC library): the headers that ended it."""
    import h2.connection
    import h2.events

    host, port = url.rsplit(":", 1)
    client = h2.connection.H2Connection()
    client.initiate_connection()
    stream_id = client.get_next_available_stream_id()
    client.send_headers(stream_id, [(b":method", b"POST"), (b":scheme", b"http"), (b":path", path.encode()),
                                    (b":authority", host.encode()), (b"content-type", b"application/grpc"),
                                    (b"te", b"trailers"), *headers])
    client.send_data(stream_id, body, end_stream=True)
    ended: dict[bytes, bytes] = {}
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(client.data_to_send())
        while not ended:
            data = raw.recv(65536)
            assert data, "the server closed the connection"
            for event in client.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                    fields = {bytes(k): bytes(v) for k, v in event.headers}
                    if b"grpc-status" in fields:
                        ended = fields
            raw.sendall(client.data_to_send())
    return ended


def test_bytes_that_are_not_http2_close_that_connection_only(grpc_server: ServerProcess, grpc_frontend: str) -> None:
    host, port = grpc_server.grpc_url.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b"\x00" * 64)
        received = b""
        while chunk := raw.recv(4096):  # the server writes its SETTINGS and a GOAWAY, then closes
            received += chunk
    assert received, "the server closed without a word"
    assert _live(grpc_server.grpc_url)


def test_a_call_the_client_gives_up_on_leaves_the_server_serving(
    grpc_server: ServerProcess, grpc_gates: dict[str, Gate], grpc_frontend: str
) -> None:
    gate = grpc_gates["gated"]
    request = inference_pb2.ModelInferRequest(model_name="gated")
    request.inputs.add(name="x", datatype="INT32", shape=[1, 1])
    request.raw_input_contents.append(np.array([[41]], dtype="<i4").tobytes())
    with grpc.insecure_channel(grpc_server.grpc_url) as channel, gate.held() as before:
        stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
        future = stub.ModelInfer.future(request, timeout=30)
        gate.wait_batches(before + 1)
        future.cancel()  # RST_STREAM while the model holds the call
        assert future.cancelled()
        assert stub.ServerLive(inference_pb2.ServerLiveRequest(), timeout=10).live
    with grpcclient.InferenceServerClient(grpc_server.grpc_url) as client:
        assert client.infer("onnx_linear", _x()).as_numpy("y").shape == (1, 3)


@pytest.mark.parametrize(("value", "seconds"), [(b"100m", 0.1), (b"2S", 2.0), (b"1H", 3600.0), (b"5u", 5e-6),
                                                (b"", None), (b"10", None), (b"123456789S", None), (b"-1S", None)])
def test_grpc_timeout_headers_are_read_as_the_spec_writes_them(value: bytes, seconds: float | None,
                                                              grpc_frontend: str) -> None:
    assert _timeout(value) == seconds


def test_grpc_message_is_percent_encoded_outside_printable_ascii(grpc_frontend: str) -> None:
    assert _grpc_message("shape [2, 3]: 100% wrong") == b"shape [2, 3]: 100%25 wrong"
    assert _grpc_message("gr\u00fc\u00dfe\nnext") == b"gr%C3%BC%C3%9Fe%0Anext"


# -- servers of their own: drain, TLS, workers -------------------------------------------------------------


def test_tls_with_alpn_and_mutual_tls(tmp_path: Path, grpc_frontend: str) -> None:
    certificates = make_certificates(tmp_path / "certificates")
    write_onnx_model(tmp_path / "plain" / "models")
    write_onnx_model(tmp_path / "mutual" / "models")
    plain = TlsServer(tmp_path / "plain", certificates, mutual=False)
    mutual = TlsServer(tmp_path / "mutual", certificates, mutual=True)
    for server in (plain, mutual):
        server.args = [*server.args, *NATIVE]
    try:
        plain.start()
        mutual.start()
        secure = grpcclient.InferenceServerClient(plain.grpc_url, ssl=True, root_certificates=str(certificates.ca))
        assert secure.infer("onnx_linear", _x()).as_numpy("y").shape == (1, 3)
        with pytest.raises(InferenceServerException):
            grpcclient.InferenceServerClient(plain.grpc_url).is_server_live()  # no plain text beside TLS
        anonymous = grpcclient.InferenceServerClient(mutual.grpc_url, ssl=True, root_certificates=str(certificates.ca))
        with pytest.raises(InferenceServerException):
            anonymous.is_server_live()
        known = grpcclient.InferenceServerClient(mutual.grpc_url, ssl=True, root_certificates=str(certificates.ca),
                                                 private_key=str(certificates.client_key),
                                                 certificate_chain=str(certificates.client_cert))
        assert known.infer("onnx_linear", _x()).as_numpy("y").shape == (1, 3)
    finally:
        plain.stop()
        mutual.stop()
