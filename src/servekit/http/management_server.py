"""The management API's server: its own uvicorn server on its own socket, in the HTTP server's
process and event loop (so it changes the very models the data plane serves).

``start`` prepares the model store, settles the token and binds ``management_host:management_port``
(127.0.0.1:8003 by default, whatever ``--host`` says); ``begin_stop`` stops accepting (at
SIGTERM, with every other port) and ``stop`` gives requests in flight up to the drain timeout.

The token: ``--management-token`` / ``SERVEKIT_MANAGEMENT_TOKEN`` when given; otherwise a fresh
random one per start, written to ``<model store>/.servekit/management-token``, readable by this
user only (mode 0600). Its path is logged, never the token. ``--no-management-auth`` serves
without one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path

import uvicorn

from servekit.config import ServerSettings
from servekit.http.management import create_management_app
from servekit.management.manager import ModelManager
from servekit.serving.control import RepositoryControl
from servekit.tls import uvicorn_tls

__all__ = ["TOKEN_FILE", "ManagementServer", "settle_token"]

log = logging.getLogger("servekit.management")

TOKEN_FILE = "management-token"
_START_TIMEOUT_S = 10.0


def settle_token(settings: ServerSettings, folder: Path) -> str | None:
    """The token to require (None: no authentication). A generated one is written to
    ``folder/management-token`` with mode 0600 before it is used (blocking)."""
    if not settings.management_auth:
        return None
    if settings.management_token:
        if len(settings.management_token) < 16:
            log.warning("the management token is short (%d characters); use 16 or more",
                        len(settings.management_token))
        return settings.management_token
    token = secrets.token_urlsafe(32)
    path = folder / TOKEN_FILE
    partial = folder / f".{TOKEN_FILE}.{os.getpid()}"
    partial.unlink(missing_ok=True)
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as out:
        out.write(token + "\n")
    partial.replace(path)
    log.info("management API token written to %s (readable by this user only)", path)
    return token


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signals alone: the main server owns SIGTERM and SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host.strip("[]"), port), family=family, backlog=128)
    except OSError as exc:
        raise OSError(f"cannot serve the management API on {host}:{port}: {exc.strerror} "
                      "(choose another --management-port, or 0 for none)") from None


class ManagementServer:
    """The management API over ``manager`` (the serving core's, so it changes the models being served)."""

    def __init__(self, manager: ModelManager, settings: ServerSettings,
                 control: RepositoryControl | None = None) -> None:
        self._manager = manager
        self._settings = settings
        self._control = control  # told the token, so the repository extension asks for the same one
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None
        self.port: int | None = None

    async def start(self) -> int:
        """Prepare the store, settle the token, bind and serve; returns the bound port."""
        settings = self._settings
        manager = self._manager
        try:
            await asyncio.to_thread(manager.store.prepare)
            token = await asyncio.to_thread(settle_token, settings, manager.store.work)
        except OSError as exc:
            raise OSError(f"the management API cannot write to the model store {manager.store.root}: {exc}; "
                          "give a writable --model-store, or --management-port 0") from None
        if token is None and settings.management_host not in ("127.0.0.1", "localhost", "::1", "[::1]"):
            log.warning("the management API on %s has no authentication: anyone who reaches it can change models",
                        settings.management_host)
        app = create_management_app(manager, token=token)
        if self._control is not None:
            self._control.use_token(token)
        listener = _bind(settings.management_host, settings.management_port)
        config = uvicorn.Config(app, lifespan="off", log_config=None, log_level=settings.log_level,
                                access_log=False, server_header=False,
                                timeout_graceful_shutdown=math.ceil(settings.drain_timeout_s), **uvicorn_tls(settings))
        server = _EmbeddedServer(config)
        task = asyncio.create_task(server.serve(sockets=[listener]))
        deadline = asyncio.get_running_loop().time() + _START_TIMEOUT_S
        while not server.started and not task.done() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        if not server.started:
            server.should_exit = True
            with contextlib.suppress(BaseException):
                await task
            listener.close()
            raise OSError(f"the management API did not start on {settings.management_host}:"
                          f"{settings.management_port}")
        self._server, self._task = server, task
        self.port = listener.getsockname()[1]
        log.info("management API on %s://%s:%d (%s)", settings.scheme, settings.management_host, self.port,
                 "bearer token" if token else "NO authentication: --no-management-auth")
        return self.port

    def begin_stop(self) -> None:
        """Stop accepting now; requests in flight go on (the embedded uvicorn's own shutdown)."""
        if self._server is not None:
            self._server.should_exit = True

    async def stop(self) -> None:
        """Stop accepting; requests in flight get the drain timeout to finish."""
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
            self._server, self._task = None, None
