"""TLS on every port (HTTP, gRPC, metrics, management) from --tls-cert/--tls-key, and mutual TLS
with --tls-ca, judged by tritonclient (ssl=True) and httpx with a certificate made in the setup."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from .managed import TOKEN, ManagedServer
from .repos import write_onnx_model
from .tls import Certificates, make_certificates


class TlsServer(ManagedServer):
    scheme = "https"

    def __init__(self, folder: Path, certificates: Certificates, mutual: bool) -> None:
        args = ["--tls-cert", str(certificates.server_cert), "--tls-key", str(certificates.server_key)]
        if mutual:
            args += ["--tls-ca", str(certificates.ca)]
        super().__init__(folder / "models", folder / "server.log", *args)
        self.certificates = certificates
        self.mutual = mutual

    def client_options(self) -> dict[str, object]:
        context = ssl.create_default_context(cafile=str(self.certificates.ca))
        if self.mutual:
            context.load_cert_chain(str(self.certificates.client_cert), str(self.certificates.client_key))
        return {"verify": context}


def _trusting(certificates: Certificates) -> ssl.SSLContext:
    """A client context that trusts the test CA and shows no certificate of its own."""
    return ssl.create_default_context(cafile=str(certificates.ca))


def _serve(folder: Path, mutual: bool) -> TlsServer:
    certificates = make_certificates(folder / "certificates")
    write_onnx_model(folder / "models")
    return TlsServer(folder, certificates, mutual).start()


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    server = _serve(tmp_path_factory.mktemp("tls"), mutual=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def mutual_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    server = _serve(tmp_path_factory.mktemp("mtls"), mutual=True)
    try:
        yield server
    finally:
        server.stop()


def _inputs(module: object) -> list[object]:
    tensor = module.InferInput("x", [1, 4], "FP32")  # type: ignore[attr-defined]
    tensor.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
    return [tensor]


def test_every_port_serves_tls(tls_server: TlsServer) -> None:
    certificates = tls_server.certificates
    client = httpclient.InferenceServerClient(tls_server.url, ssl=True,
                                              ssl_options={"ca_certs": str(certificates.ca)})
    assert client.is_server_ready()
    assert client.infer("onnx_linear", _inputs(httpclient)).as_numpy("y").shape == (1, 3)
    secure = grpcclient.InferenceServerClient(tls_server.grpc_url, ssl=True,
                                              root_certificates=str(certificates.ca))
    assert secure.infer("onnx_linear", _inputs(grpcclient)).as_numpy("y").shape == (1, 3)
    secure.close()
    options = tls_server.client_options()
    metrics = httpx.get(tls_server.metrics_url.replace("http://", "https://"), timeout=10, **options)  # type: ignore[arg-type]
    assert metrics.status_code == 200 and "servekit_requests_total" in metrics.text
    management = httpx.get(tls_server.management_url.replace("http://", "https://") + "/models", timeout=10,
                           headers={"Authorization": f"Bearer {TOKEN}"}, **options)  # type: ignore[arg-type]
    assert management.status_code == 200 and management.json()["models"][0]["modelName"] == "onnx_linear"


def test_plain_text_is_not_served_beside_tls(tls_server: TlsServer) -> None:
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://{tls_server.url}/v2/health/ready", timeout=5).raise_for_status()
    plain = grpcclient.InferenceServerClient(tls_server.grpc_url)
    with pytest.raises(InferenceServerException):
        plain.is_server_ready(client_timeout=5)
    plain.close()


def test_mutual_tls_asks_every_client_for_a_certificate(mutual_server: TlsServer) -> None:
    certificates = mutual_server.certificates
    with pytest.raises(httpx.HTTPError):  # the CA is trusted, but no client certificate is shown
        httpx.get(f"{mutual_server.base_url}/v2/health/ready", timeout=5, verify=_trusting(certificates))
    assert httpx.get(f"{mutual_server.base_url}/v2/health/ready", timeout=5,
                     **mutual_server.client_options()).status_code == 200  # type: ignore[arg-type]
    anonymous = grpcclient.InferenceServerClient(mutual_server.grpc_url, ssl=True,
                                                 root_certificates=str(certificates.ca))
    with pytest.raises(InferenceServerException):
        anonymous.is_server_ready(client_timeout=5)
    anonymous.close()
    known = grpcclient.InferenceServerClient(mutual_server.grpc_url, ssl=True, root_certificates=str(certificates.ca),
                                             private_key=str(certificates.client_key),
                                             certificate_chain=str(certificates.client_cert))
    assert known.is_server_ready()
    known.close()
    with pytest.raises(httpx.HTTPError):  # the metrics port asks too
        httpx.get(mutual_server.metrics_url.replace("http://", "https://"), timeout=5, verify=_trusting(certificates))
