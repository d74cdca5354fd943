"""The HTTP application: routes and error mapping; its lifespan runs the serving core
(``servekit.serving.core``) with gRPC and the management API attached."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import FrameType

from fastapi import FastAPI, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from servekit import __version__
from servekit.config import ServerSettings
from servekit.errors import ServekitError
from servekit.http import oip, simple
from servekit.http.bodies import error_response
from servekit.http.hot_routes import HotRoutes
from servekit.http.pages import add_pages
from servekit.observability import request_ids
from servekit.observability.logging import configure_logging
from servekit.observability.tracing import configure_tracing, shutdown_tracing
from servekit.serving.core import ServingCore

__all__ = ["app_from_environment", "create_app"]

log = logging.getLogger("servekit.http")


def create_app(settings: ServerSettings, core: ServingCore | None = None, *, serve_grpc: bool = False,
               serve_management: bool = False) -> FastAPI:
    """An app serving ``settings.repository``; models load in the lifespan and drain on shutdown.

    Pass ``core`` to serve an already-started one (its life is then the caller's). With
    ``serve_grpc`` (and ``settings.grpc_port`` not 0) the lifespan also attaches the gRPC server
    to the core, in the same event loop, and with ``serve_management`` the management API:
    both start once models are loaded and stop (in-flight calls finish) before they drain.
    """
    owned = core is None
    serving = core if core is not None else ServingCore(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not owned:
            yield
            return
        try:
            await serving.start()
            if serve_grpc and settings.grpc_port:
                from servekit.grpc.available import GRPC_HINT, grpc_installed

                if not grpc_installed():
                    raise RuntimeError(f"gRPC port {settings.grpc_port} asked for, but serving gRPC needs the grpc "
                                       f"extra: {GRPC_HINT} (or grpc_port 0)")
                from servekit.grpc.native import NATIVE_HINT, available

                if settings.grpc_frontend == "native" and not available():
                    raise RuntimeError(f"--grpc-frontend native: {NATIVE_HINT}")
                if settings.grpc_frontend == "native" or (settings.grpc_frontend == "auto" and available()):
                    from servekit.grpc.native.server import NativeGrpcServer

                    await serving.attach(NativeGrpcServer(serving.plane, serving.simple, settings))
                else:
                    if settings.grpc_frontend == "auto":
                        log.info("gRPC served by grpcio: the native front end is not built in this installation "
                                 "(it needs libnghttp2's headers at install: apt-get install libnghttp2-dev)")
                    from servekit.grpc.server import GrpcServer  # only a server that serves gRPC imports grpc

                    await serving.attach(GrpcServer(serving.plane, serving.simple, settings))
            if serve_management and settings.management_enabled:
                from servekit.http.management_server import ManagementServer

                await serving.attach(ManagementServer(serving.management(), settings, serving.plane.control))
            restore = drain_on_signals(serving)
            try:
                yield
            finally:
                restore()
        finally:
            await serving.stop()
            shutdown_tracing()  # send the spans still pending

    app = _ServekitApp(
        title="servekit",
        version=__version__,
        description="Open Inference Protocol (KServe V2) REST and a simple JSON API.",
        lifespan=lifespan,
        docs_url=None,  # served by servekit.http.pages, from this server rather than a CDN
        redoc_url=None,
    )
    app.state.dataplane = serving.plane
    app.state.simple = serving.simple
    app.state.settings = settings
    app.include_router(oip.router)
    app.include_router(simple.router)
    add_pages(app)
    app.add_exception_handler(ServekitError, _servekit_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected_error)
    return app


class _ServekitApp(FastAPI):
    """FastAPI, with the infer and predict routes answered in front of all of it: its
    per-request telemetry check (``FastAPI.__call__`` asks OpenTelemetry, which reads the
    environment, on every request), middleware stack and routing. See hot_routes."""

    _hot_routes: HotRoutes | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hot = self._hot_routes
        if hot is None:
            hot = self.hot_routes()
        await hot(scope, receive, send)

    def hot_routes(self) -> HotRoutes:
        """The hot routes (also answered by servekit's HTTP protocol, servekit.http.protocol); built on
        first use: state.dataplane is set after __init__."""
        if self._hot_routes is None:
            self._hot_routes = HotRoutes(super().__call__, self.state.dataplane, self.state.simple,
                                         self.state.settings)
        return self._hot_routes


async def _servekit_error(request: Request, error: ServekitError) -> Response:
    key = "error" if request.url.path.startswith("/v2") else "detail"
    return error_response(error, key, request_ids.ensure())


async def _unexpected_error(request: Request, error: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return error_response(ServekitError("internal server error"), "error", request_ids.ensure())


def drain_on_signals(core: ServingCore) -> Callable[[], None]:
    """Begin the core's drain the moment SIGTERM or SIGINT arrives, before chaining to the handler
    already installed (uvicorn's, which stops HTTP accepting): gRPC and the management API then
    stop accepting at the same moment as HTTP, not once HTTP has drained. Only in the main thread
    (where signal handlers live); returns what puts the previous handlers back."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    previous = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}

    def on_signal(number: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(core.begin_drain)
        chained = previous[signal.Signals(number)]
        if callable(chained):  # under uvicorn: its handler, which starts its graceful shutdown
            chained(number, frame)

    for number in previous:
        signal.signal(number, on_signal)

    def restore() -> None:
        for number, handler in previous.items():
            if signal.getsignal(number) is on_signal:
                signal.signal(number, handler)

    return restore


def app_from_environment() -> FastAPI:
    """Factory for uvicorn workers: settings come from SERVEKIT_* variables."""
    settings = ServerSettings()
    configure_logging(settings.log_level, settings.access_log, settings.log_format)
    configure_tracing(settings.otel_endpoint)
    return create_app(settings, serve_grpc=True, serve_management=True)
