"""Process-wide logging set-up, done once in every process that serves (workers included).

One format for every record a server writes: servekit's own, uvicorn's (``uvicorn``,
``uvicorn.error``) and grpc's Python logger (``grpc``) go through the same handler, as

- ``text``: ``2024-05-01 12:00:00,000 INFO 4242 servekit.http: message``, with
  `` request_id=ID`` at the end when the record was made while a request was being answered
  (JSON-quoted when it holds spaces or quotes, as in the access log);
- ``json``: one JSON object per line: ``time`` (UTC, ISO 8601, milliseconds), ``level``,
  ``logger``, ``message``, ``request_id`` (null outside a request), ``pid``, and ``exception``
  (the traceback) when there is one.

The access log (``servekit.observability.access``) writes its own lines, for speed, in the same
two shapes. grpc's C core writes its own few lines to stderr itself (``GRPC_VERBOSITY``); they
do not pass through Python and keep grpc's format.
"""

from __future__ import annotations

import logging
from typing import Literal

import orjson

from servekit.observability import request_ids
from servekit.observability.access import AccessLogMode, configure_access_log, iso_time, quoted

__all__ = ["JsonFormatter", "LogFormat", "TextFormatter", "configure_logging"]

LogFormat = Literal["text", "json"]

_FORMAT = "%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s"
# servekit's records, uvicorn's ("uvicorn.error" and "uvicorn.access" propagate to "uvicorn") and grpc's.
_LOGGERS = ("servekit", "uvicorn", "grpc")


class TextFormatter(logging.Formatter):
    """logging's usual line, with the request id at the end of records made inside a request."""

    def __init__(self) -> None:
        super().__init__(_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = request_ids.current()
        return line if request_id is None else f"{line} request_id={quoted(request_id)}"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (a traceback is a field, never extra lines)."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, object] = {
            "time": iso_time(record.created), "level": record.levelname, "logger": record.name,
            "message": record.getMessage(), "request_id": request_ids.current(), "pid": record.process,
        }
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            document["exception"] = record.exc_text
        if record.stack_info:
            document["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(document, default=str).decode()


def configure_logging(level: str, access_log: AccessLogMode = "off", log_format: LogFormat = "text") -> None:
    """Log servekit's, uvicorn's and grpc's records to stderr at ``level`` in ``log_format``, and the
    access log (``servekit.access``) as ``access_log`` says whatever the level; a second call
    replaces the first."""
    formatter = JsonFormatter() if log_format == "json" else TextFormatter()
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(level.upper())
        logger.handlers = [handler for handler in logger.handlers if not getattr(handler, "_servekit", False)]
        handler = logging.StreamHandler()
        handler.setFormatter(formatter)
        handler._servekit = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False
    configure_access_log(access_log)
