"""The serving core of one server process: who builds, starts and stops what answers requests.

``ServingCore`` owns the registry, the data plane, the simple API, the response cache and
the repository poller. Transports are attached to it once models are loaded and are
stopped before the models drain, so the order of a server's life is written once, here:

    start:  cache -> start-up loading (repository, then --models archives) -> gc freeze -> ready -> poller
            -> attached servers, in order
    drain:  (SIGTERM) not ready -> every attached server stops accepting, at once (``begin_drain``)
    stop:   not ready -> poller -> attached servers, in reverse -> models drain and unload -> the
            archives this process unpacked -> cache

The HTTP app's lifespan, and a Ray Serve replica, run a core; gRPC and the management API are
attached servers. Nothing here imports a transport: a server is anything with ``start`` and
``stop``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import TYPE_CHECKING, Protocol

from servekit.cache import create_cache
from servekit.config import ServerSettings
from servekit.observability import metrics
from servekit.serving.control import RepositoryControl
from servekit.serving.dataplane import DataPlane
from servekit.serving.registry import Registry
from servekit.serving.simple import SimpleAPI

if TYPE_CHECKING:
    from servekit.management.manager import ModelManager
    from servekit.serving.polling import RepositoryPoller

__all__ = ["AttachedServer", "ServingCore"]

log = logging.getLogger("servekit")


class AttachedServer(Protocol):
    """A server run beside the core: started once models are loaded, stopped before they drain."""

    async def start(self) -> int: ...

    def begin_stop(self) -> None:
        """Stop accepting connections and calls now, without waiting (the drain has begun)."""

    async def stop(self) -> None:
        """Stop accepting (if not yet) and wait for what is in flight, within the server's grace."""


class ServingCore:
    """The registry of ``settings.repository`` (and model store), its data plane and simple API."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        # Before any model loads: each version's metrics choose then whether they carry Triton's names.
        metrics.use_triton_names(settings.triton_metrics, settings.triton_summaries)
        self._registry = Registry(settings.repository, store=settings.model_store)
        self.plane = DataPlane(self._registry, control=RepositoryControl(settings.repository_control))
        self.simple = SimpleAPI(self.plane, settings.default_model)
        self._poller: RepositoryPoller | None = None
        self._attached: list[AttachedServer] = []
        self._manager: ModelManager | None = None

    async def start(self) -> None:
        """Load the start-up models (``settings.load_models``, default all); a model that fails
        only marks itself unavailable. Then the server is ready and the poller runs."""
        settings = self.settings
        self.plane.cache = create_cache(settings)
        await self._registry.load_all(settings.load_models)
        if settings.models:  # archives named at start (``--models``): the management operations register them
            await self.management().register_at_start(settings.models)
        # Move everything alive after loading (modules, weights, sessions) out of the
        # collector's reach: batching frees requests in waves, and without this each
        # wave's full collection re-walked those objects (45-55 ms pauses in p99).
        gc.collect()
        gc.freeze()
        self.plane.started = True
        if settings.poll_interval:
            from servekit.serving.polling import RepositoryPoller

            self._poller = RepositoryPoller(self._registry, settings.poll_interval)
            await self._poller.start()

    async def attach(self, server: AttachedServer) -> None:
        """Start ``server`` now and stop it (in reverse order of attaching) before the models drain."""
        await server.start()
        self._attached.append(server)

    def management(self) -> ModelManager:
        """The management operations over this core's models (built once, on first use)."""
        if self._manager is None:
            from servekit.management.manager import ModelManager

            self._manager = ModelManager(self._registry, self.settings)
        return self._manager

    def begin_drain(self) -> None:
        """The drain starts (SIGTERM): not ready from now on, and every attached server stops
        accepting at once, so no port takes new work while another drains. Idempotent."""
        self.plane.stopping = True
        for server in self._attached:
            server.begin_stop()

    async def stop(self) -> None:
        """Stop in order: not ready, poller, attached servers (their in-flight calls finish), then
        every batcher drains and every model unloads, then the cache closes."""
        self.plane.stopping = True
        try:
            if self._poller is not None:
                await self._poller.stop()
                self._poller = None
            while self._attached:
                await self._attached.pop().stop()
        finally:
            await self._registry.close()
            if self._manager is not None:
                await asyncio.to_thread(self._manager.close)
            if self.plane.cache is not None:
                await self.plane.cache.close()
