"""The program of a model's own process: load one runtime, run its batches until told to stop.

Started by ``servekit.runtimes.process.ModelProcess`` (its docstring has the messages). The
process never outlives its server: it exits when the control pipe closes, and a watcher thread
ends it when the server dies mid-call (it notices it has a new parent). It ignores SIGINT and
SIGTERM, so a Ctrl-C or a group-wide SIGTERM lets the server drain in-flight batches first
and stop it in order.

The arrays a model receives here are views of the shared region: valid for that call only
(a model that keeps inputs across calls must copy them).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import sys
import threading
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any, Final

from servekit.runtimes import create_runtime
from servekit.runtimes.base import Runtime, RuntimeContext, RuntimeRequest
from servekit.runtimes.process import Loaded, Raised
from servekit.runtimes.shared_tensors import Packed, SharedRegion

__all__ = ["main"]

_ORPHAN_CHECK_S: Final = 0.5
_PROTOCOL: Final = pickle.HIGHEST_PROTOCOL


class _ForwardHandler(logging.Handler):
    """Sends every record, formatted down to plain fields, to the server (any thread)."""

    def __init__(self, connection: Connection) -> None:
        super().__init__()
        self._connection = connection
        self._send_lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = dict(record.__dict__)
            fields["msg"], fields["args"] = record.getMessage(), None
            if record.exc_info:
                fields["exc_text"] = logging.Formatter().formatException(record.exc_info)
            fields["exc_info"] = None
            data = pickle.dumps({k: v for k, v in fields.items() if _plain(v)}, protocol=_PROTOCOL)
            with self._send_lock:
                self._connection.send_bytes(data)
        except Exception:  # the server is gone, or a field would not pickle: never fail the model for a log line
            self.handleError(record)


def _plain(value: object) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _exit_when_orphaned(server_pid: int) -> None:
    while True:
        if os.getppid() != server_pid:  # the server died (we were handed to init or a subreaper)
            os._exit(1)
        time.sleep(_ORPHAN_CHECK_S)


def _run(runtime: Runtime, region: SharedRegion, message: tuple[Any, ...]) -> tuple[Any, ...]:
    kind, size, payload, inputs_end = message
    region.follow(size)
    if kind == "predict":
        outputs = runtime.predict(region.unpack(payload, copy=False))
        packed, _ = region.pack(outputs, inputs_end)
        return ("done", region.size, packed)
    sent: Sequence[tuple[Packed, dict[str, Any], tuple[str, ...], str | None]] = payload
    requests = [RuntimeRequest(region.unpack(packed, copy=False), parameters, outputs, request_id)
                for packed, parameters, outputs, request_id in sent]
    answers: list[Packed | Raised] = []
    end = inputs_end
    for answer in runtime.predict_requests(requests):
        if isinstance(answer, BaseException):
            answers.append(Raised.of(answer))
        else:
            packed, end = region.pack(answer, end)
            answers.append(packed)
    return ("done", region.size, answers)


def _serve(control: Connection, region: SharedRegion, runtime: Runtime) -> None:
    while True:
        try:
            message = pickle.loads(control.recv_bytes())
        except (EOFError, OSError):
            return  # the server closed the pipe: it is gone or done with us
        if message[0] == "stop":
            return
        try:
            reply = _run(runtime, region, message)
        except Exception as exc:  # the model's failure: the server fails this batch only
            reply = ("raised", Raised.of(exc))
        control.send_bytes(pickle.dumps(reply, protocol=_PROTOCOL))


def main(argv: Sequence[str]) -> None:
    server_pid, control_fd, logs_fd, region_fd = map(int, argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_exit_when_orphaned, args=(server_pid,), name="servekit-orphan-watch",
                     daemon=True).start()
    control, logs, region = Connection(control_fd), Connection(logs_fd), SharedRegion(region_fd)
    root = logging.getLogger()
    root.addHandler(_ForwardHandler(logs))
    kind, runtime_name, context, levels = pickle.loads(control.recv_bytes())
    assert kind == "load" and isinstance(context, RuntimeContext)
    for name, level in levels.items():
        logging.getLogger(name or None).setLevel(level)
    try:
        runtime = create_runtime(runtime_name, context)
        runtime.load()
    except Exception as exc:
        control.send_bytes(pickle.dumps(("failed", Raised.of(exc)), protocol=_PROTOCOL))
        _exit(0)
    loaded = Loaded(runtime.platform, runtime.device, runtime.per_request, runtime.splits_by_rows,
                    runtime.signature(), os.getpid())
    control.send_bytes(pickle.dumps(("loaded", loaded), protocol=_PROTOCOL))
    try:
        _serve(control, region, runtime)
    finally:
        try:
            runtime.unload()
        except Exception:
            logging.getLogger("servekit.isolation").exception("model %s: unloading failed", context.model_name)
    _exit(0)


def _exit(code: int) -> None:
    """Leave now, output flushed: a thread the model started must not keep its process alive."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
