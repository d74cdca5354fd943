"""Process-wide logging set-up, done once in every process that serves (workers included)."""

from __future__ import annotations

import logging

__all__ = ["configure_logging"]

_FORMAT = "%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s"


def configure_logging(level: str) -> None:
    """Log servekit's records to stderr at ``level``; a second call only changes the level."""
    logger = logging.getLogger("servekit")
    logger.setLevel(level.upper())
    if not any(getattr(handler, "_servekit", False) for handler in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(_FORMAT))
        handler._servekit = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False
