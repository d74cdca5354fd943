"""The access log: one line per inference request, on the logger ``servekit.access``.

Fields: request id (``-`` when the client gave none), model, version (``-`` when the request
never resolved one), protocol, status (the HTTP status of the error table, also for gRPC;
200 on success, 499 when the client went away), duration in milliseconds from the data
plane receiving the request to its answer, and the cache outcome (``hit``, ``miss``, or
``-`` for a model without a cache).

``text`` (default) writes through servekit's log handler, after its usual prefix (one line)::

    2024-05-01 12:00:00,000 INFO 4242 servekit.access: id=req-1 model=digits version=1
    protocol=http status=200 duration_ms=0.412 cache=-

``json`` writes one JSON object per line, nothing around it, for log shippers (one line)::

    {"time": "2024-05-01T12:00:00.000Z", "pid": 4242, "id": "req-1", "model": "digits",
    "version": "1", "protocol": "http", "status": 200, "duration_ms": 0.412, "cache": "-"}

``off`` writes nothing and costs one comparison per request.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Literal

import orjson

__all__ = ["AccessLogMode", "configure_access_log", "log_request"]

AccessLogMode = Literal["text", "json", "off"]

_logger = logging.getLogger("servekit.access")
_TEXT = "id=%s model=%s version=%s protocol=%s status=%d duration_ms=%.3f cache=%s"
_FIELDS = ("id", "model", "version", "protocol", "status", "duration_ms", "cache")
_enabled = False


class _JsonLine(logging.Formatter):
    """A record of ``log_request`` as one JSON object (its arguments, named)."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "pid": record.process,
        }
        assert isinstance(record.args, tuple)
        document.update(zip(_FIELDS, record.args, strict=True))
        document["duration_ms"] = round(float(document["duration_ms"]), 3)  # type: ignore[arg-type]
        return orjson.dumps(document).decode()


def configure_access_log(mode: AccessLogMode) -> None:
    """Turn the access log on (``text``/``json``) or off; a second call replaces the first."""
    global _enabled
    for handler in [h for h in _logger.handlers if getattr(h, "_servekit", False)]:
        _logger.removeHandler(handler)
    _enabled = mode != "off"
    _logger.setLevel(logging.INFO)  # independent of --log-level: the access log has its own switch
    _logger.disabled = not _enabled
    if mode == "json":
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_JsonLine())
        handler._servekit = True  # type: ignore[attr-defined]
        _logger.addHandler(handler)
        _logger.propagate = False
    else:
        _logger.propagate = True  # text: servekit's own handler, with its prefix


def _quoted(value: str) -> str:
    """A text-mode field as is, or JSON-quoted when it holds spaces, quotes or control characters
    (a client chooses ids and model names; it must not be able to forge a log line)."""
    if value and value.isprintable() and " " not in value and '"' not in value:
        return value
    return orjson.dumps(value).decode()


def log_request(request_id: str | None, model: str, version: str | None, protocol: str, status: int,
                duration_ms: float, cache: str) -> None:
    """One access log line (nothing when the access log is off)."""
    if not _enabled:
        return
    if _logger.propagate:  # text
        _logger.info(_TEXT, _quoted(request_id or "-"), _quoted(model), version or "-", protocol, status,
                     duration_ms, cache)
    else:
        _logger.info(_TEXT, request_id, model, version, protocol, status, duration_ms, cache)
