"""A small OTLP/HTTP trace receiver on a real loopback socket, for the tracing tests.

It answers ``POST /v1/traces`` as a collector does: the body is an ``ExportTraceServiceRequest``
(protobuf; gzip when Content-Encoding says so), decoded with opentelemetry-proto's message
classes; the answer is an empty ``ExportTraceServiceResponse``. Each span is kept with its
resource's ``service.name``.
"""

from __future__ import annotations

import gzip
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.conftest import require_module

require_module("opentelemetry.proto", "pip install 'servekit[otel]'")

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # noqa: E402
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

__all__ = ["OtlpReceiver", "ReceivedSpan"]


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    kind: int  # opentelemetry.proto.trace.v1.Span.SpanKind: 2 = SERVER
    trace_id: str  # hex
    span_id: str
    parent_span_id: str  # "" for a root span
    attributes: dict[str, Any]
    status_code: int  # 0 unset, 1 ok, 2 error


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    return None if kind is None else getattr(any_value, kind)


class OtlpReceiver:
    """``with OtlpReceiver() as receiver:`` serves on ``receiver.endpoint`` until the block ends."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.requests = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                receiver._receive(ExportTraceServiceRequest.FromString(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"

    def _receive(self, request: ExportTraceServiceRequest) -> None:
        spans = []
        for resource_spans in request.resource_spans:
            resource = {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans.append(ReceivedSpan(
                        service=str(resource.get("service.name")), name=span.name, kind=span.kind,
                        trace_id=span.trace_id.hex(), span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        attributes={kv.key: _value(kv.value) for kv in span.attributes},
                        status_code=span.status.code,
                    ))
        with self._lock:
            self.requests += 1
            self.spans.extend(spans)

    def trace(self, trace_id: str, at_least: int, timeout_s: float = 60.0) -> list[ReceivedSpan]:
        """The spans of ``trace_id`` once ``at_least`` arrived (AssertionError naming what came
        when they do not within ``timeout_s``: the exporter sends in batches)."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                found = [span for span in self.spans if span.trace_id == trace_id]
            if len(found) >= at_least or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert len(found) >= at_least, f"spans of trace {trace_id}: {found}; all spans: {self.spans}"
        return found

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
