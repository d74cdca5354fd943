"""Model instances in their own processes (``isolation: process`` in config.yaml).

``IsolatedRuntime`` is a Runtime like any other to the batcher: it starts a child process
(``servekit.runtimes.process``), loads the real runtime there by name with the same
RuntimeContext, and proxies ``signature``, ``predict``, ``predict_requests`` and ``unload``;
tensors cross in shared memory (``servekit.runtimes.shared_tensors``). One instance is one
process running one batch at a time, so ``instances: N`` computes on N cores even for a model
that holds the GIL.

What a crash does (the process exits, calls ``os._exit``, dies of SIGSEGV, is killed):

- the batch in flight fails with ModelFailed (500 / INTERNAL) saying how the process ended;
  other instances, other models and their requests never notice;
- a new process starts and loads the model again: at once after a first crash, after
  ``RestartPolicy.delays_s`` after the next ones; a batch that comes meanwhile waits for it;
- after ``max_crashes`` crashes within ``window_s`` the instance stays down: its batches get
  ModelNotReady (503) with the reason, which the repository index shows, until the model is
  loaded again (repository or management API, or a changed file).

A death between calls (the OOM killer) is noticed at once and handled the same way. ``abort``
(the batcher abandoning a call that ran past ``execution_timeout_s``) kills the process: unlike
a thread, the hung call really stops.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from servekit.errors import ModelFailed, ModelNotReady
from servekit.runtimes.base import Arrays, Runtime, RuntimeContext, RuntimeRequest, Signature
from servekit.runtimes.process import ModelProcess, ProcessExited

__all__ = ["IsolatedRuntime", "RestartPolicy"]

log = logging.getLogger("servekit.isolation")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """How an instance whose process crashed comes back, and when it gives up."""

    delays_s: tuple[float, ...] = (0.0, 1.0, 2.0, 4.0)  # before the restart after the 1st, 2nd, ... crash
    max_crashes: int = 5  # this many crashes within window_s: the instance stays down
    window_s: float = 60.0

    def delay_s(self, recent_crashes: int) -> float:
        return self.delays_s[min(recent_crashes, len(self.delays_s)) - 1]


class IsolatedRuntime(Runtime):
    """``runtime_name`` run in a process of its own; restarted after a crash (module docstring)."""

    thread_safe = False

    def __init__(self, context: RuntimeContext, runtime_name: str, policy: RestartPolicy | None = None) -> None:
        super().__init__(context)
        self.runtime_name = runtime_name
        self.platform = runtime_name  # until the child says
        self._policy = policy or RestartPolicy()
        self._label = f"{context.model_name}:{context.version}"
        self._signature: Signature | None = None
        self._calls = threading.Lock()  # one call at a time; held while waiting for a restart
        self._state = threading.Condition()  # guards everything below
        self._process: ModelProcess | None = None  # the one that serves; None while restarting or down
        self._starting: ModelProcess | None = None
        self._dead: list[ModelProcess] = []  # ended; their pipes and region are closed under _calls
        self._crashes: deque[float] = deque()
        self._down: str | None = None
        self._closed = False
        self._wake = threading.Event()  # cuts a restart's backoff short when closing
        self._restarter: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        """The process serving now (None while it restarts, or when down or unloaded)."""
        process = self._process
        return process.pid if process is not None else None

    def load(self) -> None:
        process = ModelProcess(self.runtime_name, self.context, on_lost=self._on_lost)
        loaded = process.wait_loaded()
        self.platform, self.device, self.per_request = loaded.platform, loaded.device, loaded.per_request
        self.splits_by_rows = loaded.splits_by_rows
        self._signature = loaded.signature
        self._process = process
        log.info("model %s: %s instance loaded in process %d", self._label, self.runtime_name, process.pid)

    def signature(self) -> Signature | None:
        return self._signature

    def predict(self, inputs: Arrays) -> Arrays:
        return self._call(lambda process: process.predict(inputs))

    def predict_requests(self, requests: Sequence[RuntimeRequest]) -> list[Arrays | Exception]:
        return self._call(lambda process: process.predict_requests(requests))

    def unavailable_reason(self) -> str | None:
        return self._down

    def _call(self, run: Callable[[ModelProcess], T]) -> T:
        with self._calls:
            self._close_dead()
            process = self._wait_for_process()
            try:
                return run(process)
            except ProcessExited as exc:
                self._lost(process, exc.description)
                process.close()
                raise ModelFailed(f"the model's process {exc.description} while running this batch") from None

    def _wait_for_process(self) -> ModelProcess:
        with self._state:
            while True:
                if self._closed:
                    raise ModelNotReady(f"model {self._label}: this instance is stopping")
                if self._down is not None:
                    raise ModelNotReady(f"model {self._label} is down: {self._down}")
                if self._process is not None:
                    return self._process
                self._state.wait()

    def _on_lost(self, process: ModelProcess) -> None:
        """The log relay saw ``process`` end without being told to (a death between calls)."""
        self._lost(process, process.wait_exit())

    def _lost(self, process: ModelProcess | None, description: str) -> None:
        """Count a crash of the serving process (None: of a restart that failed to load); then
        restart after the policy's delay, or stay down. Only the first report of a crash counts."""
        with self._state:
            if self._closed or self._process is not process:
                return
            self._process = None
            if process is not None:
                self._dead.append(process)
            now = time.monotonic()
            self._crashes.append(now)
            while now - self._crashes[0] > self._policy.window_s:
                self._crashes.popleft()
            recent = len(self._crashes)
            if recent >= self._policy.max_crashes:
                self._down = (f"its process crashed {recent} times within {self._policy.window_s:g} s (last: "
                              f"{description}); it stays down until the model is loaded again")
                self._state.notify_all()
                log.error("model %s: %s", self._label, self._down)
                return
            delay = self._policy.delay_s(recent)
            self._restarter = threading.Thread(target=self._restart, args=(delay,), daemon=True,
                                               name=f"servekit-restart-{self._label}")
            self._restarter.start()
        pid = f" {process.pid}" if process is not None else ""
        log.error("model %s: its process%s %s; starting a new one%s", self._label, pid, description,
                  f" in {delay:g} s" if delay else "")

    def _restart(self, delay_s: float) -> None:
        if delay_s and self._wake.wait(delay_s):
            return  # closing
        try:
            with self._state:
                if self._closed:
                    return
                process = self._starting = ModelProcess(self.runtime_name, self.context, on_lost=self._on_lost)
            process.wait_loaded()
        except Exception as exc:
            with self._state:
                self._starting = None
            text = str(exc) if str(exc).startswith("the model's process") else f"{type(exc).__name__}: {exc}"
            self._lost(None, f"failed to load again ({text})")
            return
        with self._state:
            self._starting = None
            if not self._closed:
                self._process = process
                self._state.notify_all()
                log.info("model %s: a new process %d serves", self._label, process.pid)
                return
        process.stop()

    def _close_dead(self) -> None:
        with self._state:
            dead, self._dead = self._dead, []
        for process in dead:
            process.close()

    def abort(self) -> None:
        """Kill the process now (never blocks): the call in flight ends with ModelFailed, and this
        instance serves no more (the batcher loads a fresh one)."""
        with self._state:
            self._closed = True
            self._wake.set()
            self._state.notify_all()
            victims = [p for p in (self._process, self._starting) if p is not None]
        for process in victims:
            process.kill()

    def unload(self) -> None:
        """Stop the process (it unloads the model and exits; SIGKILL if it lingers) and release
        the pipes and shared memory; afterwards no process of this instance is left."""
        with self._state:
            self._closed = True
            self._wake.set()
            self._state.notify_all()
            process, starting, restarter = self._process, self._starting, self._restarter
            self._process = None
        if starting is not None:
            starting.kill()
        if restarter is not None:
            restarter.join()
        with self._calls:
            if process is not None:
                process.stop()
            self._close_dead()
