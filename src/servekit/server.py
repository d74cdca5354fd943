"""Start the transports: HTTP on uvicorn (uvloop when installed; httptools, writing each
response in one write, see ``servekit.http.protocol``), and gRPC
(grpc.aio) inside each uvicorn worker's lifespan, on the same event loop and data plane.
Metrics are served from this process (see ``servekit.observability.exposition``), started
before uvicorn so that every worker writes its values where the metrics server reads them.

SIGTERM/SIGINT: every port stops accepting at once (uvicorn closes the HTTP listener; the
serving core stops gRPC and the management API accepting in the same moment), requests and
calls in flight get ``--drain-timeout`` seconds to finish, what is left is then closed, the
batchers drain and the models unload; the process exits 0. With ``workers > 1`` uvicorn forks that many processes
sharing the HTTP socket, and each binds the gRPC port with SO_REUSEPORT; each reads its
settings from the SERVEKIT_* environment set here.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import os
import secrets
import signal
import socket
import sys
from types import FrameType

import uvicorn

from servekit.config import ServerSettings, environment_variable, old_environment_variable
from servekit.http.protocol import http_protocol
from servekit.observability import tracing
from servekit.observability.exposition import MetricsServer, use_multiprocess_dir
from servekit.observability.logging import configure_logging
from servekit.tls import tls_files, uvicorn_tls

__all__ = ["check_port_free", "export_settings", "serve"]

log = logging.getLogger("servekit")


def export_settings(settings: ServerSettings) -> None:
    """Write settings into SERVEKIT_* variables so worker processes build the same server (an old
    variable name is removed: the workers read the new one, and warn nobody again)."""
    for name, value in settings.model_dump(exclude_none=True).items():
        os.environ[environment_variable(name)] = json.dumps(value) if isinstance(value, list) else str(value)
        old = old_environment_variable(name)
        if old is not None:
            os.environ.pop(old, None)


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def check_port_free(host: str, port: int) -> None:
    """SystemExit with a clear message when ``host:port`` is taken. Workers bind the gRPC port
    with SO_REUSEPORT, which would silently share a port some other server listens on."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as exc:
            raise SystemExit(f"servekit: cannot serve gRPC on {host}:{port}: {exc.strerror}") from None


def start_metrics(settings: ServerSettings) -> MetricsServer:
    """Send every process's metric values to one fresh folder and serve their sum on
    ``settings.host:metrics_port``. Must run before this process imports prometheus-client."""
    folder, ours = use_multiprocess_dir()
    if "prometheus_client.values" in sys.modules:  # imported too early: choose the value class again
        from prometheus_client import values

        values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    server = MetricsServer(folder, remove_folder=ours)
    try:
        server.start(settings.host, settings.metrics_port, tls_files(settings), triton=settings.triton_metrics)
    except OSError as exc:
        server.stop()
        raise SystemExit(f"servekit: cannot serve metrics on {settings.host}:{settings.metrics_port}: "
                         f"{exc.strerror or exc}") from None
    return server


def serve(settings: ServerSettings) -> None:
    configure_logging(settings.log_level, settings.access_log, settings.log_format)
    if settings.cache_namespace is None:  # one per start, shared by this start's workers (servekit.cache)
        settings = settings.model_copy(update={"cache_namespace": secrets.token_hex(8)})
    export_settings(settings)
    grpc = f"gRPC on {settings.host}:{settings.grpc_port}" if settings.grpc_port else "no gRPC"
    metrics = (f"metrics on {settings.scheme}://{settings.host}:{settings.metrics_port}" if settings.metrics_port
               else "no metrics")
    log.info(
        "servekit serving %s: HTTP on %s://%s:%d, %s, %s (%d worker%s)%s",
        settings.repository, settings.scheme, settings.host, settings.http_port, grpc, metrics, settings.workers,
        "" if settings.workers == 1 else "s",
        "" if settings.tls_cert is None else (", TLS" if settings.tls_ca is None else ", mutual TLS"),
    )
    if tracing.wanted(settings.otel_endpoint):
        try:  # checked here, once, rather than failing in every worker
            importlib.import_module("opentelemetry.exporter.otlp.proto.http.trace_exporter")
            importlib.import_module("opentelemetry.sdk.trace")
        except ImportError:
            raise SystemExit("servekit: tracing (--otel-endpoint or OTEL_EXPORTER_OTLP_ENDPOINT) needs the "
                             "OpenTelemetry SDK: pip install 'servekit[otel]'") from None
    if settings.grpc_port:
        check_port_free(settings.host, settings.grpc_port)
    metrics_server = start_metrics(settings) if settings.metrics_port else None
    # uvicorn restores this handler after its graceful shutdown and re-raises the captured
    # SIGTERM; a finished drain is a clean stop, so exit 0 rather than die by the signal (-15).
    signal.signal(signal.SIGTERM, _exit_cleanly)
    try:
        uvicorn.run(
            "servekit.http.app:app_from_environment",
            factory=True,
            host=settings.host,
            port=settings.http_port,
            workers=settings.workers,
            log_level=settings.log_level,
            access_log=False,
            # uvicorn's loggers are servekit's to set up (one format: servekit.observability.logging),
            # here and in each worker (app_from_environment), not uvicorn's own dictConfig.
            log_config=None,
            server_header=False,
            # Nothing in servekit reads the client address; uvicorn's X-Forwarded-* rewrite
            # was 2 % of the event loop per request on the tiny-model benchmark.
            proxy_headers=False,
            http=http_protocol(),  # one socket write per response (see servekit.http.protocol)
            # After SIGTERM, requests in flight get the drain timeout; then what is left is closed
            # (gRPC's calls get the same budget, at the same time: servekit.serving.core).
            timeout_graceful_shutdown=math.ceil(settings.drain_timeout_s),
            # uvicorn answers 503 once its open connections reach the limit, counting the new one.
            limit_concurrency=None if settings.max_connections is None else settings.max_connections + 1,
            **uvicorn_tls(settings),
        )
    finally:
        if metrics_server is not None:
            metrics_server.stop()
