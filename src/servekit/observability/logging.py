"""Process-wide logging set-up, done once in every process that serves (workers included)."""

from __future__ import annotations

import logging

from servekit.observability.access import AccessLogMode, configure_access_log

__all__ = ["configure_logging"]

_FORMAT = "%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s"


def configure_logging(level: str, access_log: AccessLogMode = "off") -> None:
    """Log servekit's records to stderr at ``level``, and the access log (``servekit.access``) as
    ``access_log`` says whatever the level; a second call changes both."""
    logger = logging.getLogger("servekit")
    logger.setLevel(level.upper())
    if not any(getattr(handler, "_servekit", False) for handler in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(_FORMAT))
        handler._servekit = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False
    configure_access_log(access_log)
