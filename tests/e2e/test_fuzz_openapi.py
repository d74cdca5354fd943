"""The HTTP API fuzzed from its own OpenAPI document (schemathesis) against a real server: whatever
the path parameters and bodies, no answer is a 5xx and the server stays up. Bounded: a few dozen
examples per operation, no shrinking deadline."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from .harness import ServerProcess
from .repos import write_onnx_model


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder: Path = tmp_path_factory.mktemp("fuzz")
    write_onnx_model(folder / "models")
    # The repository extension's load and unload stay behind the management token (403 here), so the
    # fuzz cannot unload the model and turn every later answer into a deliberate 503.
    server = ServerProcess(folder / "models", folder / "server.log", "--default-model", "onnx_linear").start()
    try:
        yield server
    finally:
        server.stop()


def test_no_request_from_the_openapi_document_gets_a_5xx(fuzzed_server: ServerProcess) -> None:
    api = schemathesis.openapi.from_url(f"{fuzzed_server.base_url}/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) >= 15  # every route of the document, not a few

    statuses: list[int] = []
    for operation in operations:
        @settings(max_examples=30, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(), real_model=st.booleans())
        def no_server_error(case: schemathesis.Case, real_model: bool) -> None:
            if real_model and case.path_parameters and "model" in case.path_parameters:
                # Half the cases name the served model, so bodies reach the decoders and the model.
                case.path_parameters["model"] = "onnx_linear"
                if "version" in case.path_parameters:
                    case.path_parameters["version"] = "2"
            response = case.call(timeout=30)
            statuses.append(response.status_code)
            case.validate_response(response, checks=[not_a_server_error])

        no_server_error()
        assert fuzzed_server.process is not None and fuzzed_server.process.poll() is None, operation.label
    reached = [status for status in statuses if status != 404]
    assert len(reached) > len(statuses) // 3, statuses  # the fuzz got past routing, into the handlers


def test_the_server_answers_after_the_fuzz(fuzzed_server: ServerProcess) -> None:
    answer = httpx.post(f"{fuzzed_server.base_url}/predict", json={"inputs": [[1.0, 2.0, 3.0, 4.0]]}, timeout=10)
    assert answer.status_code == 200
