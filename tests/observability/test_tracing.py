"""When tracing is on, and where spans go (the spans themselves: tests/e2e/test_telemetry.py)."""

from __future__ import annotations

import pytest

from servekit.observability import tracing
from tests.conftest import require_module


@pytest.mark.parametrize(("endpoint", "environ", "on"), [
    (None, {}, False),
    ("http://127.0.0.1:4318", {}, True),
    (None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
    (None, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
    ("http://127.0.0.1:4318", {"OTEL_SDK_DISABLED": "true"}, False),
    (None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
    (None, {"OTEL_SERVICE_NAME": "x"}, False),  # naming a service alone exports nothing
])
def test_tracing_is_opt_in(endpoint: str | None, environ: dict[str, str], on: bool) -> None:
    assert tracing.wanted(endpoint, environ) is on


@pytest.mark.parametrize(("endpoint", "url"), [
    ("http://127.0.0.1:4318", "http://127.0.0.1:4318/v1/traces"),
    ("http://127.0.0.1:4318/", "http://127.0.0.1:4318/v1/traces"),
    ("https://collector.example/otlp/v1/traces", "https://collector.example/otlp/v1/traces"),
])
def test_an_endpoint_without_a_path_gets_the_traces_path(endpoint: str, url: str) -> None:
    assert tracing.traces_url(endpoint) == url


def test_off_unless_asked_and_off_after_shutdown(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SDK_DISABLED"):
        monkeypatch.delenv(name, raising=False)
    assert tracing.configure_tracing(None) is False and tracing.tracer is None
    require_module("opentelemetry.sdk.trace", "pip install 'servekit[otel]'")
    try:
        assert tracing.configure_tracing("http://127.0.0.1:9") is True  # nothing listens: spans are dropped
        assert tracing.tracer is not None
    finally:
        tracing.shutdown_tracing()
    assert tracing.tracer is None
