"""Start the transports. Today: HTTP on uvicorn (uvloop + httptools when installed).

SIGTERM/SIGINT: uvicorn stops accepting, lets in-flight requests finish, then the
app's lifespan drains every batcher and unloads the models; the process exits 0.
With ``workers > 1`` uvicorn forks that many processes sharing the listening
socket; each reads its settings from the SERVEKIT_* environment set here.
"""

from __future__ import annotations

import json
import logging
import os
import signal
from types import FrameType

import uvicorn

from servekit.config import ServerSettings
from servekit.observability.logging import configure_logging

__all__ = ["export_settings", "serve"]

log = logging.getLogger("servekit")


def export_settings(settings: ServerSettings) -> None:
    """Write settings into SERVEKIT_* variables so worker processes build the same server."""
    for name, value in settings.model_dump(exclude_none=True).items():
        os.environ[f"SERVEKIT_{name.upper()}"] = json.dumps(value) if isinstance(value, list) else str(value)


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def serve(settings: ServerSettings) -> None:
    configure_logging(settings.log_level)
    export_settings(settings)
    log.info(
        "servekit serving %s: HTTP on http://%s:%d (%d worker%s)",
        settings.repository, settings.host, settings.http_port, settings.workers,
        "" if settings.workers == 1 else "s",
    )
    # uvicorn restores this handler after its graceful shutdown and re-raises the captured
    # SIGTERM; a finished drain is a clean stop, so exit 0 rather than die by the signal (-15).
    signal.signal(signal.SIGTERM, _exit_cleanly)
    uvicorn.run(
        "servekit.http.app:app_from_environment",
        factory=True,
        host=settings.host,
        port=settings.http_port,
        workers=settings.workers,
        log_level=settings.log_level,
        access_log=False,
        server_header=False,
    )
