"""The gRPC server: grpc.aio in the same process and event loop as the HTTP server.

Both transports share one DataPlane, so gRPC and HTTP requests for a model wait in the
same batch queue and batch together. ``start`` runs once models are loaded (it is attached
to the serving core by the HTTP app's lifespan); at SIGTERM ``begin_stop`` stops accepting
calls at once, as HTTP stops accepting connections, and the calls in flight get the drain
timeout to finish before the models are drained and unloaded.

With several worker processes each one binds the same port with SO_REUSEPORT and the
kernel spreads *connections* (not calls) across them; a single process binds without
it, so a port that is already taken is an error rather than silently shared.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from google.protobuf.descriptor import FileDescriptor
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2

from servekit.config import ServerSettings
from servekit.grpc.health import HealthServicer, ModelHealthServicer
from servekit.grpc.inference import InferenceServicer
from servekit.grpc.model_service import ModelServicer
from servekit.grpc.pool import POOL
from servekit.grpc.rpc import add_service
from servekit.serving.dataplane import DataPlane
from servekit.serving.simple import SimpleAPI
from servekit.tls import grpc_credentials

__all__ = ["GrpcServer", "add_to_reflection_pool", "bind_address"]

log = logging.getLogger("servekit.grpc")

def bind_address(host: str, port: int) -> str:
    """host:port as gRPC wants it (IPv6 literals in brackets)."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def add_to_reflection_pool(files: list[FileDescriptor]) -> None:
    """Make servekit's pool answer reflection for services whose descriptors live elsewhere."""
    for file in files:
        try:
            POOL.FindFileByName(file.name)  # type: ignore[no-untyped-call]  # untyped in types-protobuf
        except KeyError:
            POOL.AddSerializedFile(file.serialized_pb)  # type: ignore[no-untyped-call]


class GrpcServer:
    """Serves InferenceServicer, ModelServicer, both Health services and reflection on ``settings.host:grpc_port``."""

    def __init__(self, plane: DataPlane, simple: SimpleAPI, settings: ServerSettings) -> None:
        self._plane = plane
        self._simple = simple
        self._settings = settings
        self._server: grpc.aio.Server | None = None
        self._stopping: asyncio.Task[None] | None = None
        self.port: int | None = None

    async def start(self) -> int:
        """Bind and start serving; returns the bound port. OSError when the port cannot be bound."""
        settings = self._settings
        limit = settings.grpc_max_message_bytes
        server = grpc.aio.server(options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
        ])
        inference, simple = InferenceServicer(self._plane), ModelServicer(self._simple)
        names = [inference.service.full_name, simple.service.full_name, ModelHealthServicer.service.full_name]
        health = HealthServicer(self._plane, server_services=names)
        for servicer in (inference, simple, health, ModelHealthServicer(health)):
            add_service(server, servicer.service, servicer)
        add_to_reflection_pool([health_pb2.DESCRIPTOR, reflection_pb2.DESCRIPTOR])
        reflection.enable_server_reflection([*names, health.service.full_name, reflection.SERVICE_NAME], server,
                                            pool=POOL)
        address = bind_address(settings.host, settings.grpc_port)
        credentials = grpc_credentials(settings)
        try:
            port = server.add_insecure_port(address) if credentials is None else server.add_secure_port(
                address, credentials)
        except RuntimeError as exc:
            raise OSError(f"cannot serve gRPC on {address}: the port is in use or the address is not local ({exc})"
                          ) from None
        await server.start()
        self._server, self.port = server, port
        log.info("gRPC on %s", bind_address(settings.host, port))
        return port

    def begin_stop(self) -> None:
        """Stop accepting calls now (new ones get UNAVAILABLE); those in flight get the drain
        timeout (``settings.drain_timeout_s``) to finish, then are cancelled."""
        if self._server is not None and self._stopping is None:
            self._stopping = asyncio.ensure_future(self._server.stop(self._settings.drain_timeout_s))

    async def stop(self) -> None:
        """``begin_stop`` if not yet, and wait until the calls in flight are done or cancelled."""
        self.begin_stop()
        if self._stopping is not None:
            await self._stopping
        self._server, self._stopping = None, None
