"""Session-scoped real servers for the end-to-end tests (one process per configuration)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import missing
from tests.gate import Gate

from .grpc_repos import build_grpc_repository
from .harness import SIMPLE_MAX_REQUEST_BYTES, ServerProcess
from .repos import build_main_repository, write_identity_model, write_onnx_model


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def main_repository(main_gate: Gate, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_main_repository(tmp_path_factory.mktemp("repo") / "models", main_gate.folder)


@pytest.fixture(scope="session")
def main_server(main_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """identity, onnx_linear (v1 and v2), broken, faulty, slow and gated, served over real sockets."""
    server = ServerProcess(main_repository, tmp_path_factory.mktemp("logs") / "main.log",
                           "--repository-control", "open")  # its gate: tests/e2e/test_repository_control.py
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def simple_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """onnx_linear as the default model of /predict (identity beside it), with a small request size limit."""
    repository = tmp_path_factory.mktemp("simple") / "models"
    write_onnx_model(repository)
    write_identity_model(repository)  # a second model, so /predict depends on --default-model
    server = ServerProcess(
        repository,
        tmp_path_factory.mktemp("logs") / "simple.log",
        "--default-model", "onnx_linear",
        "--max-request-bytes", str(SIMPLE_MAX_REQUEST_BYTES),
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session", params=["grpcio", "native"])
def grpc_frontend(request: pytest.FixtureRequest) -> str:
    """What serves the gRPC tests' port (``--grpc-frontend``): every gRPC test runs against both."""
    if request.param == "native":
        from servekit.grpc.native import available

        if not available():
            missing("servekit's native gRPC front end (the C extension built from libnghttp2's headers)",
                    "apt-get install libnghttp2-dev && pip install -e .")
    return str(request.param)


@pytest.fixture(scope="session")
def grpc_gates(grpc_frontend: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Gate]:
    """The gates of the gRPC server's ``slow_classifier`` and ``gated`` models, open: a test that holds
    batches closes its gate and opens it again before it ends (``Gate.held``). One set per front end."""
    folder = tmp_path_factory.mktemp(f"gates-{grpc_frontend}")
    return {name: Gate(folder / name, opened=True) for name in ("slow_classifier", "gated")}


@pytest.fixture(scope="session")
def grpc_server(grpc_gates: dict[str, Gate], grpc_frontend: str,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The gRPC tests' server: tests/e2e/grpc_repos.py's models, slow_classifier as the default model,
    once per gRPC front end."""
    repository = build_grpc_repository(tmp_path_factory.mktemp("grpc") / "models",
                                       {name: gate.folder for name, gate in grpc_gates.items()})
    server = ServerProcess(repository, tmp_path_factory.mktemp("logs") / "grpc.log",
                           "--default-model", "slow_classifier", "--repository-control", "open",
                           "--grpc-frontend", grpc_frontend)
    server.start()
    try:
        yield server
    finally:
        for gate in grpc_gates.values():
            gate.open()
        server.stop()


@pytest.fixture(scope="session")
def main_gate(tmp_path_factory: pytest.TempPathFactory) -> Gate:
    """The gate of the main server's ``gated`` model, open (see ``grpc_gates``)."""
    return Gate(tmp_path_factory.mktemp("main-gate"), opened=True)
