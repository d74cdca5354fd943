"""One model in a Ray Serve replica: a servekit serving core and its HTTP routes, no socket."""

from __future__ import annotations

import logging
from pathlib import Path

from servekit.config import ServerSettings
from servekit.errors import ServekitError
from servekit.http.app import create_app
from servekit.ray.asgi import ForwardedRequest, ForwardedResponse, call_app
from servekit.serving.core import ServingCore

__all__ = ["ModelReplica"]

log = logging.getLogger("servekit.ray")


class ModelReplica:
    """Loads model ``name`` of ``repository`` (a path every Ray node can read) and answers the
    requests the ingress forwards through the same routes as ``servekit serve``: runtimes,
    batching, instances and caching work as there, per replica.

    Ray Serve awaits an async constructor, so a replica counts as started only once its model
    is loaded; a model that fails to load fails the deployment instead of answering 503s.
    """

    async def __init__(self, repository: str, name: str) -> None:  # type: ignore[misc]
        self.name = name
        settings = ServerSettings(repository=Path(repository), load_models=[name], default_model=name, grpc_port=0,
                                  metrics_port=0, management_port=0, poll_interval=None)
        self.core = ServingCore(settings)
        await self.core.start()
        try:
            self.core.plane.require_model(name)
        except ServekitError as exc:
            await self.core.stop()
            raise RuntimeError(f"model {name!r} did not load: {exc.message}") from None
        self.app = create_app(settings, self.core)
        log.info("model %s ready in a Ray Serve replica", name)

    async def forward(self, request: ForwardedRequest) -> ForwardedResponse:
        return await call_app(self.app, request)

    def check_health(self) -> None:
        """Ray Serve's health probe: a replica whose model went away is restarted."""
        if not self.core.plane.model_ready(self.name):
            raise RuntimeError(f"model {self.name!r} is not ready")
