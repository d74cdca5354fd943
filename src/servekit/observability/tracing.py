"""Traces: OpenTelemetry spans exported over OTLP, opt-in (the ``otel`` extra).

Off by default. ``configure_tracing`` turns it on in a serving process (every worker calls it)
when ``--otel-endpoint`` is given, or when the standard variables name an endpoint
(``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``); ``OTEL_SDK_DISABLED=true``
keeps it off either way. The OpenTelemetry SDK then reads the rest of the standard variables
itself: ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` (the service is ``servekit`` unless
they name one), ``OTEL_TRACES_SAMPLER`` (default: follow the caller's sampling decision, sample
new traces), ``OTEL_PROPAGATORS`` (default: W3C ``traceparent``/``tracestate`` and baggage),
``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_EXPORTER_OTLP_TIMEOUT`` and ``OTEL_BSP_*`` (the batch span
processor: how often and how much it sends). Spans go out over OTLP/HTTP (protobuf).

The spans of one inference request:

    POST /v2/models/{model}/infer          SERVER, child of the caller's traceparent when it sent one
    ├── servekit.queue_wait                from entering the model's batch queue to its batch starting
    └── servekit.compute                   the model running the batch (servekit.batch.size: its rows,
                                           servekit.batch.requests: the requests in it)

gRPC calls get a SERVER span named ``package.Service/Method``, with the caller's context read
from the call's metadata. Other HTTP routes get a SERVER span too, named by their route.

Cost when off: ``tracer`` is None, and the transports and the batcher check that one name
before doing anything else; no span object, no context is made, OpenTelemetry is not imported.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from servekit.observability import request_ids

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer
    from starlette.types import Message, Receive, Scope, Send

__all__ = ["BatchTrace", "configure_tracing", "grpc_span", "queued", "record_batch", "shutdown_tracing",
           "traced_http", "tracer", "wanted"]

log = logging.getLogger("servekit.tracing")

tracer: Tracer | None = None
_provider: TracerProvider | None = None
_INSTALL_HINT = "tracing needs the OpenTelemetry SDK: pip install 'servekit[otel]'"


def wanted(endpoint: str | None, environ: Mapping[str, str] = os.environ) -> bool:
    """Whether tracing is on: an ``endpoint`` given, or one in the standard variables; never
    with ``OTEL_SDK_DISABLED=true``."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none" and not endpoint:
        return False
    return bool(endpoint or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL of ``endpoint``: as given when it names a path, else with
    ``/v1/traces`` (as ``OTEL_EXPORTER_OTLP_ENDPOINT`` is read)."""
    scheme, _, rest = endpoint.partition("://")
    if not rest:
        raise ValueError(f"--otel-endpoint {endpoint!r} is not a URL (e.g. http://127.0.0.1:4318)")
    host, slash, path = rest.partition("/")
    return endpoint if slash and path else f"{scheme}://{host}/v1/traces"


def configure_tracing(endpoint: str | None) -> bool:
    """Start exporting spans when ``wanted``; returns whether tracing is on. A second call
    replaces the first. RuntimeError when the ``otel`` extra is not installed."""
    global tracer, _provider
    shutdown_tracing()
    if not wanted(endpoint):
        return False
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise RuntimeError(f"{_INSTALL_HINT} ({exc})") from None
    from servekit import __version__

    named = "OTEL_SERVICE_NAME" in os.environ or "service.name=" in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    resource = Resource.create({} if named else {SERVICE_NAME: "servekit"})
    provider = TracerProvider(resource=resource, shutdown_on_exit=True)
    exporter = OTLPSpanExporter(endpoint=traces_url(endpoint)) if endpoint else OTLPSpanExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    _provider = provider
    tracer = provider.get_tracer("servekit", __version__)
    log.info("tracing: spans go to %s", traces_url(endpoint) if endpoint else "the OTEL_EXPORTER_OTLP_* endpoint")
    return True


def shutdown_tracing() -> None:
    """Send what is pending and stop (tracing is off afterwards)."""
    global tracer, _provider
    provider, _provider, tracer = _provider, None, None
    if provider is not None:
        provider.shutdown()


# -- HTTP ------------------------------------------------------------------------------------------

def _http_route(method: str, path: str) -> str:
    """A low-cardinality name for a path servekit answers in front of FastAPI (else the path's
    first segment)."""
    if path.startswith("/v2/models/") and path.endswith("/infer"):
        return "/v2/models/{model}/versions/{version}/infer" if "/versions/" in path else "/v2/models/{model}/infer"
    for prefix in ("/predictions/", "/explanations/"):
        if path.startswith(prefix):
            return prefix + ("{model}/{version}" if path.count("/") > 2 else "{model}")
    return path if path in ("/predict", "/predict_async", "/ping") else ""


async def traced_http(route: Callable[[Scope, Receive, Send], Awaitable[None]], scope: Scope, receive: Receive,
                      send: Send) -> None:
    """``route`` inside a SERVER span, the child of the caller's ``traceparent`` (when it sent one)."""
    from opentelemetry import propagate
    from opentelemetry.trace import SpanKind, StatusCode
    from starlette.datastructures import Headers

    assert tracer is not None
    method: str = scope["method"]
    path: str = scope["path"]
    template = _http_route(method, path)
    status = 0

    async def capture(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        await send(message)

    parent = propagate.extract(Headers(scope=scope))
    attributes = {"http.request.method": method, "url.path": path, "url.scheme": scope.get("scheme", "http")}
    with tracer.start_as_current_span(f"{method} {template}".rstrip(), context=parent, kind=SpanKind.SERVER,
                                      attributes=attributes) as span:
        try:
            await route(scope, receive, capture)
        finally:
            if not template:  # a FastAPI route: name the span by its template once routing found it
                found = getattr(scope.get("route"), "path_format", None)
                if found:
                    template = found
                    span.update_name(f"{method} {found}")
            if template:
                span.set_attribute("http.route", template)
            span.set_attribute("http.response.status_code", status)
            span.set_attribute("servekit.request_id", request_ids.ensure())
            if status >= 500 or status == 0:
                span.set_status(StatusCode.ERROR)


# -- gRPC ------------------------------------------------------------------------------------------

_metadata_getter: Any = None


def _getter() -> Any:
    """An OpenTelemetry Getter reading gRPC invocation metadata (a sequence of (key, value)); made
    on first use, as OpenTelemetry is imported only when tracing is on."""
    global _metadata_getter
    if _metadata_getter is None:
        from opentelemetry.propagators.textmap import Getter

        class MetadataGetter(Getter[Any]):
            def get(self, carrier: Any, key: str) -> list[str] | None:
                values = [value if isinstance(value, str) else value.decode("latin-1")
                          for name, value in carrier if name == key]
                return values or None

            def keys(self, carrier: Any) -> list[str]:
                return [name for name, _ in carrier]

        _metadata_getter = MetadataGetter()
    return _metadata_getter


@contextmanager
def grpc_span(method: str, metadata: Any) -> Iterator[Span]:
    """A SERVER span for one gRPC call to ``method`` (``/package.Service/Method``); the caller's
    context comes from ``metadata``. The caller sets ``rpc.grpc.status_code`` on it."""
    from opentelemetry import propagate
    from opentelemetry.trace import SpanKind

    assert tracer is not None
    service, _, name = method.strip("/").partition("/")
    parent = propagate.extract(metadata or (), getter=_getter())
    attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}
    with tracer.start_as_current_span(f"{service}/{name}", context=parent, kind=SpanKind.SERVER,
                                      attributes=attributes) as span:
        try:
            yield span
        finally:
            span.set_attribute("servekit.request_id", request_ids.ensure())


# -- the batcher -----------------------------------------------------------------------------------

BatchTrace = tuple["Context", int]  # (the request's context, when it entered the queue: time.time_ns())


def queued() -> BatchTrace:
    """What the batcher keeps of a request entering its queue (call only when ``tracer`` is set)."""
    from opentelemetry import context

    return context.get_current(), time.time_ns()


def record_batch(traces: list[BatchTrace], label: str, rows: int, requests: int, compute_ns: int,
                 error: BaseException | None) -> None:
    """The queue-wait and compute spans of the traced requests of one finished batch, which
    computed for ``compute_ns`` and ended now."""
    if tracer is None:
        return
    from opentelemetry.trace import StatusCode

    ended = time.time_ns()
    started = ended - compute_ns
    model, _, version = label.rpartition(":")
    attributes: dict[str, str | int] = {"servekit.model": model, "servekit.model.version": version,
                                        "servekit.batch.size": rows, "servekit.batch.requests": requests}
    for parent, entered in traces:
        waited = tracer.start_span("servekit.queue_wait", context=parent, start_time=entered,
                                   attributes={"servekit.model": model, "servekit.model.version": version})
        waited.end(end_time=max(entered, started))
        computed = tracer.start_span("servekit.compute", context=parent, start_time=started, attributes=attributes)
        if error is not None:
            computed.set_status(StatusCode.ERROR, type(error).__name__)
        computed.end(end_time=ended)
