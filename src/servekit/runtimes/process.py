"""One model process seen from the server: start it, load the model there, call it, stop it.

The child is ``python -c`` running ``servekit.runtimes.child`` (not ``fork``: the server has
threads and an event loop; not ``multiprocessing``: that would import the server's ``__main__``
again and start a resource tracker process). It gets exactly three descriptors and no other:

- ``control``: a socket pair; one message each way per call, pickled tuples:
  ``("load", runtime, context, log_levels)`` -> ``("loaded", Loaded)`` | ``("failed", Raised)``;
  ``("predict", region_size, inputs, inputs_end)`` -> ``("done", region_size, outputs)`` | ``("raised", Raised)``;
  ``("predict_requests", region_size, [(inputs, parameters, outputs, id)], inputs_end)`` ->
  ``("done", region_size, [outputs | Raised])``; ``("stop",)`` -> the child unloads and exits 0;
- ``logs``: the child's log records, relayed by a thread here to the loggers of the same names;
  its end of file is how a death between calls is noticed at once;
- the shared tensor region (``servekit.runtimes.shared_tensors``).

The child's stdout and stderr are the server's. Isolation guards against faults, not against a
hostile model: replies are pickles from the model's own code.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Final

from servekit.errors import ConfigError
from servekit.runtimes.base import Arrays, RuntimeContext, RuntimeRequest, Signature
from servekit.runtimes.shared_tensors import Packed, SharedRegion

__all__ = ["Loaded", "ModelProcess", "ProcessExited", "Raised", "describe_exit"]

log = logging.getLogger("servekit.isolation")

STOP_TIMEOUT_S: Final = 10.0
_REAP_TIMEOUT_S: Final = 5.0
_PROTOCOL: Final = pickle.HIGHEST_PROTOCOL
# argv: the model's label (for ps), the server's sys.path, the server's pid, the three descriptors
_BOOTSTRAP: Final = ("import json, sys; sys.path[:] = json.loads(sys.argv[2]); "
                     "from servekit.runtimes.child import main; main(sys.argv[3:])")


class ProcessExited(Exception):
    """The model's process went away; ``description`` says how ("exited with code 1")."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


@dataclass(frozen=True, slots=True)
class Loaded:
    """What the child tells of the model it loaded."""

    platform: str
    device: str
    per_request: bool
    splits_by_rows: bool
    signature: Signature | None
    pid: int


@dataclass(frozen=True, slots=True)
class Raised:
    """An exception of the model's process: itself when the server can unpickle it, else its
    type's name and message; and its traceback text, which stays in the server's log."""

    pickled: bytes | None
    type_name: str
    message: str
    traceback: str

    @classmethod
    def of(cls, exc: BaseException) -> Raised:
        try:
            pickled: bytes | None = pickle.dumps(exc, protocol=_PROTOCOL)
        except Exception:
            pickled = None
        return cls(pickled, type(exc).__name__, str(exc), "".join(traceback.format_exception(exc)))

    def rebuild(self) -> Exception:
        """The exception, raised here as it was there (a class the server cannot import comes
        back as a stand-in of the same name and message)."""
        exc: Exception | None = None
        if self.pickled is not None:
            try:
                loaded = pickle.loads(self.pickled)
            except Exception:
                loaded = None
            exc = loaded if isinstance(loaded, Exception) else None
        if exc is None:
            exc = type(self.type_name, (Exception,), {"__module__": "servekit.isolation"})(self.message)
        exc.add_note(f"in the model's process:\n{self.traceback.rstrip()}")
        return exc


def describe_exit(returncode: int) -> str:
    """How a process ended, in words: "exited with code 1", "was killed by signal 11 (SIGSEGV)"."""
    if returncode >= 0:
        return f"exited with code {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        return f"was killed by signal {-returncode}"
    return f"was killed by signal {-returncode} ({name})"


def _log_levels() -> dict[str, int]:
    """The levels the child's loggers start at: the server's, so it sends nothing the server drops."""
    return {"": logging.getLogger().getEffectiveLevel(), "servekit": logging.getLogger("servekit").getEffectiveLevel()}


class ModelProcess:
    """A started child; ``wait_loaded`` before calls. Calls are sequential (one batch at a time).

    ``on_lost`` is called (from the log relay thread) when the process ends without being
    stopped or killed from here, e.g. between calls."""

    def __init__(self, runtime_name: str, context: RuntimeContext,
                 on_lost: Callable[[ModelProcess], None] | None = None) -> None:
        if os.name != "posix":
            raise ConfigError("isolation: process needs a POSIX system: it hands the model's "
                              "process its pipes and shared memory as inherited descriptors")
        self.label = f"{context.model_name}:{context.version}"
        self._on_lost = on_lost
        self._ending = False  # stop() or kill() was called: the end of the process is expected
        self._closed = False
        self._close_lock = threading.Lock()
        self.region = SharedRegion.create()
        parent_control, child_control = socket.socketpair()
        parent_logs, child_logs = socket.socketpair()
        fds = (child_control.fileno(), child_logs.fileno(), self.region.fileno())
        command = [sys.executable, "-c", _BOOTSTRAP, f"servekit-model={self.label}", json.dumps(sys.path),
                   str(os.getpid()), *map(str, fds)]
        try:
            # stdout/stderr inherited: what the model prints lands where the server's output goes.
            self._popen = subprocess.Popen(command, pass_fds=fds, stdin=subprocess.DEVNULL,
                                           env={**os.environ, "PYTHONUNBUFFERED": "1"})
        except BaseException:
            for end in (parent_control, parent_logs):
                end.close()
            self.region.close()
            raise
        finally:
            child_control.close()  # only the child holds these now: its death is our end of file
            child_logs.close()
        self.pid = self._popen.pid
        self._control = Connection(parent_control.detach())
        self._relay = threading.Thread(target=self._relay_logs, args=(Connection(parent_logs.detach()),),
                                       name=f"servekit-logs-{self.label}-{self.pid}", daemon=True)
        self._relay.start()
        with contextlib.suppress(ProcessExited):  # died at once: wait_loaded says how
            self._send(("load", runtime_name, context, _log_levels()))

    def wait_loaded(self) -> Loaded:
        """Block until the model is loaded there; on failure, raise the load's own exception
        (or RuntimeError when the process died) with the process gone."""
        try:
            reply = self._receive()
        except ProcessExited as exc:
            self.close()
            raise RuntimeError(f"the model's process {exc.description} while loading the model") from None
        if reply[0] == "failed":
            self.stop()
            raise reply[1].rebuild()
        loaded: Loaded = reply[1]
        return loaded

    def predict(self, inputs: Arrays) -> Arrays:
        packed, end = self.region.pack(inputs)
        reply = self._call(("predict", self.region.size, packed, end))
        self.region.follow(reply[1])
        return self.region.unpack(reply[2], copy=True)

    def predict_requests(self, requests: Sequence[RuntimeRequest]) -> list[Arrays | Exception]:
        sent: list[tuple[Packed, Any, tuple[str, ...], str | None]] = []
        end = 0
        for request in requests:
            packed, end = self.region.pack(request.inputs, end)
            sent.append((packed, dict(request.parameters), request.requested_outputs, request.id))
        reply = self._call(("predict_requests", self.region.size, sent, end))
        self.region.follow(reply[1])
        return [answer.rebuild() if isinstance(answer, Raised) else self.region.unpack(answer, copy=True)
                for answer in reply[2]]

    def _call(self, message: tuple[Any, ...]) -> tuple[Any, ...]:
        self._send(message)
        reply = self._receive()
        if reply[0] == "raised":
            raise reply[1].rebuild()
        return reply

    def _send(self, message: tuple[Any, ...]) -> None:
        try:
            self._control.send_bytes(pickle.dumps(message, protocol=_PROTOCOL))
        except OSError:
            raise ProcessExited(self.wait_exit()) from None

    def _receive(self) -> tuple[Any, ...]:
        try:
            data = self._control.recv_bytes()
        except (EOFError, OSError):
            raise ProcessExited(self.wait_exit()) from None
        reply: tuple[Any, ...] = pickle.loads(data)
        return reply

    def wait_exit(self) -> str:
        """Reap the process (killing it if it lingers) and say how it ended."""
        try:
            code = self._popen.wait(_REAP_TIMEOUT_S)
        except subprocess.TimeoutExpired:  # closed its end yet still running: not a process to trust
            self._popen.kill()
            code = self._popen.wait()
        return describe_exit(code)

    @property
    def running(self) -> bool:
        return self._popen.poll() is None

    def kill(self) -> None:
        """SIGKILL, now (safe from any thread, never blocks); ``stop`` or ``close`` reaps it later."""
        self._ending = True
        if self._popen.returncode is None:
            with contextlib.suppress(OSError):  # already reaped
                self._popen.kill()

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Ask the child to unload and exit; SIGKILL after ``timeout_s``; then release everything."""
        self._ending = True
        if self._popen.poll() is None:
            with contextlib.suppress(OSError):
                self._control.send_bytes(pickle.dumps(("stop",), protocol=_PROTOCOL))
            try:
                self._popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("model %s: its process %d did not stop within %.0f s; killing it", self.label, self.pid,
                            timeout_s)
                self._popen.kill()
        self.close()

    def close(self) -> None:
        """Reap the (ended or killed) process and close the pipes and the region. Idempotent."""
        self._ending = True
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        if self._popen.poll() is None:
            self._popen.kill()
        self._popen.wait()
        self._control.close()
        if threading.current_thread() is not self._relay:
            self._relay.join(_REAP_TIMEOUT_S)
        self.region.close()

    def _relay_logs(self, logs: Connection) -> None:
        """Hand each record of the child to the server's logger of the same name, until the child ends."""
        try:
            while True:
                try:
                    fields = pickle.loads(logs.recv_bytes())
                except (EOFError, OSError):
                    break
                record = logging.makeLogRecord(fields)
                logger = logging.getLogger(record.name)
                if logger.isEnabledFor(record.levelno):
                    logger.handle(record)
        finally:
            logs.close()
        if not self._ending and self._on_lost is not None:
            self._on_lost(self)
