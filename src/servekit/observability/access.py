"""The access log: one line per inference request, written to stderr in batches.

Fields: request id (the client's ``x-request-id``, else the OIP body's ``id``, else one servekit
made: ``servekit.observability.request_ids``), model, version (``-`` when the request
never resolved one), protocol, status (the HTTP status of the error table, also for gRPC;
200 on success, 499 when the client went away), duration in milliseconds from the data
plane receiving the request to its answer, and the cache outcome (``hit``, ``miss``, or
``-`` for a model without a cache).

``text`` (default) has the prefix of servekit's other log lines (one line)::

    2024-05-01 12:00:00,000 INFO 4242 servekit.access: id=req-1 model=digits version=1
    protocol=http status=200 duration_ms=0.412 cache=-

``json`` writes one JSON object per line, nothing around it, for log shippers, with the keys of
servekit's other JSON log records (``servekit.observability.logging``) first (one line)::

    {"time": "2024-05-01T12:00:00.000Z", "level": "INFO", "logger": "servekit.access",
    "message": "http digits 200 0.412 ms", "request_id": "req-1", "pid": 4242, "model": "digits",
    "version": "1", "protocol": "http", "status": 200, "duration_ms": 0.412, "cache": "-"}

``off`` writes nothing and costs one comparison per request.

Why not the ``logging`` module: a record per request through a StreamHandler (LogRecord,
caller lookup, time formatting, one write and flush per line) was a fifth of the event
loop's work per request on the tiny-model benchmark. Lines are formatted here directly and
written in batches, like nginx's ``access_log ... buffer=``: a batch goes out when it holds
``_BATCH_LINES`` lines, and a background thread writes what is pending every
``FLUSH_INTERVAL_S``, so a line is on stderr at most that long after its request (and at
exit: ``flush`` runs from ``atexit``).
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time
from typing import Literal

import orjson

__all__ = ["FLUSH_INTERVAL_S", "AccessLogMode", "configure_access_log", "flush", "iso_time", "log_request", "quoted"]

AccessLogMode = Literal["text", "json", "off"]

FLUSH_INTERVAL_S = 0.1
_BATCH_LINES = 256

_mode: AccessLogMode = "off"
_pending: list[str] = []
_lock = threading.Lock()
_flusher: threading.Thread | None = None
_pid = os.getpid()
_second = -1
_second_text = ""


def configure_access_log(mode: AccessLogMode) -> None:
    """Turn the access log on (``text``/``json``) or off; a second call replaces the first."""
    global _mode, _pid, _flusher
    flush()
    _mode = mode
    _pid = os.getpid()  # worker processes configure after the fork
    if mode != "off" and (_flusher is None or not _flusher.is_alive()):
        _flusher = threading.Thread(target=_flush_forever, name="servekit-access-log", daemon=True)
        _flusher.start()


def flush() -> None:
    """Write every pending line to stderr now."""
    with _lock:
        _write_pending()


def _write_pending() -> None:  # holds _lock
    if not _pending:
        return
    text = "".join(_pending)
    _pending.clear()
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except (OSError, ValueError):  # stderr closed or gone: the access log must never fail a request
        pass


def _flush_forever() -> None:
    while True:
        time.sleep(FLUSH_INTERVAL_S)
        if _pending:
            flush()


atexit.register(flush)


def quoted(value: str) -> str:
    """A text-mode field as is, or JSON-quoted when it holds spaces, quotes or control characters
    (a client chooses ids and model names; it must not be able to forge a log line)."""
    if value and value.isprintable() and " " not in value and '"' not in value:
        return value
    return orjson.dumps(value).decode()


def _timestamp(now: float) -> str:
    """``2024-05-01 12:00:00,000`` in local time, as logging's default formatter writes it."""
    global _second, _second_text
    second = int(now)
    if second != _second:
        _second, _second_text = second, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
    return f"{_second_text},{int((now - second) * 1000):03d}"


def iso_time(now: float) -> str:
    """``2024-05-01T12:00:00.000Z``: ``now`` (seconds since the epoch) in UTC, to the millisecond."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"


def log_request(request_id: str | None, model: str, version: str | None, protocol: str, status: int,
                duration_ms: float, cache: str) -> None:
    """One access log line (nothing when the access log is off)."""
    if _mode == "off":
        return
    now = time.time()
    if _mode == "text":
        line = (f"{_timestamp(now)} INFO {_pid} servekit.access: id={quoted(request_id or '-')}"
                f" model={quoted(model)} version={version or '-'} protocol={protocol} status={status}"
                f" duration_ms={duration_ms:.3f} cache={cache}\n")
    else:
        line = orjson.dumps({
            "time": iso_time(now), "level": "INFO", "logger": "servekit.access",
            "message": f"{protocol} {model} {status} {duration_ms:.3f} ms", "request_id": request_id, "pid": _pid,
            "model": model, "version": version, "protocol": protocol, "status": status,
            "duration_ms": round(duration_ms, 3), "cache": cache,
        }).decode() + "\n"
    with _lock:
        _pending.append(line)
        if len(_pending) >= _BATCH_LINES:
            _write_pending()
