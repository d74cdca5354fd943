"""``grpc.health.v1.Health`` (Check and Watch) and ``modelserving.Health`` (Check), answered from the data plane.

Service names: "" and each served gRPC service name report the server (SERVING once
start-up loading finished, NOT_SERVING while stopping); a model's name reports that
model's readiness (its default version). Any other name is unknown: Check answers
NOT_FOUND, Watch sends SERVICE_UNKNOWN, as the health protocol asks.

Why not grpcio-health-checking's HealthServicer: it serves a table that someone must
keep in step with every model load and unload, whichever transport caused it. Reading
the data plane on each call has no second copy of the state to go stale. Watch polls it
every ``POLL_S`` seconds, sends each change, and ends once the server is stopping so a
graceful stop is not held up by open watches.

``modelserving.Health`` is the same Check in servekit's own proto (model_service.proto), for
clients generated from that file alone: ``ModelHealthServicer`` asks the standard servicer, so
the two can never answer differently.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2 as pb

from servekit.errors import ModelNotFound
from servekit.grpc.generated import model_service_pb2 as simple_pb
from servekit.serving.dataplane import DataPlane

__all__ = ["POLL_S", "HealthServicer", "ModelHealthServicer"]

POLL_S = 0.25

Context = grpc.aio.ServicerContext[Any, Any]
SERVING = pb.HealthCheckResponse.SERVING
NOT_SERVING = pb.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = pb.HealthCheckResponse.SERVICE_UNKNOWN


class HealthServicer:
    service = pb.DESCRIPTOR.services_by_name["Health"]

    def __init__(self, plane: DataPlane, server_services: Iterable[str] = ()) -> None:
        self._plane = plane
        self._server_services = {"", *server_services}

    def status(self, service: str) -> Any:
        """SERVING / NOT_SERVING, or SERVICE_UNKNOWN for a name that is neither the server nor a model."""
        if service in self._server_services:
            return SERVING if self._plane.ready() else NOT_SERVING
        try:
            ready = self._plane.model_ready(service)
        except ModelNotFound:
            return SERVICE_UNKNOWN
        return SERVING if ready and not self._plane.stopping else NOT_SERVING

    async def Check(self, request: pb.HealthCheckRequest, context: Context) -> pb.HealthCheckResponse:
        status = self.status(request.service)
        if status == SERVICE_UNKNOWN:
            raise ModelNotFound(f"unknown service or model {request.service!r}")
        return pb.HealthCheckResponse(status=status)

    async def Watch(self, request: pb.HealthCheckRequest, context: Context) -> AsyncIterator[pb.HealthCheckResponse]:
        last = None
        while True:
            status = self.status(request.service)
            if status != last:
                yield pb.HealthCheckResponse(status=status)
                last = status
            if self._plane.stopping:
                return
            await asyncio.sleep(POLL_S)


# grpc.health.v1's answer -> modelserving's (the same numbers, but two enums: map by name, not by luck).
_SIMPLE_STATUS = {SERVING: simple_pb.HealthCheckResponse.SERVING,
                  NOT_SERVING: simple_pb.HealthCheckResponse.NOT_SERVING}


class ModelHealthServicer:
    """``modelserving.Health``: Check, answered by the standard servicer (see the module docstring)."""

    service = simple_pb.DESCRIPTOR.services_by_name["Health"]

    def __init__(self, health: HealthServicer) -> None:
        self._health = health

    async def Check(self, request: simple_pb.HealthCheckRequest, context: Context) -> simple_pb.HealthCheckResponse:
        status = self._health.status(request.service)
        if status == SERVICE_UNKNOWN:
            raise ModelNotFound(f"unknown service or model {request.service!r}")
        return simple_pb.HealthCheckResponse(status=_SIMPLE_STATUS[status])
