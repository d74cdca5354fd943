"""A gate for handler models: a test holds a model's batches until it opens the gate, and sees each
batch arrive, so tests wait for observable states instead of sleeping for a head start.

A gated handler calls ``wait_at_gate(self.context.parameters.get("gate"), first_column)``
(``GATE_HANDLER_CODE`` defines it; paste it into the handler's source): it appends its process id
and the batch's first column to ``GATE/arrived`` (one line per batch, so batch N is line N), then
waits until ``GATE/allowed`` holds a number of at least N (120 s at most, so a failed test never
leaves a server hanging). ``open()`` lets every batch through; ``allow(n)`` the first n. Files, not
in-process events, so the same gate works in a server process and across its workers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["GATE_HANDLER_CODE", "Gate", "wait_for"]

GATE_HANDLER_CODE = '''
def wait_at_gate(gate, first_column):
    import fcntl
    import os
    import pathlib
    import time
    if not gate:
        return
    folder = pathlib.Path(gate)
    line = f"{os.getpid()}|" + " ".join(f"{float(value):g}" for value in first_column) + "\\n"
    with open(folder / "arrived", "a+", encoding="utf-8") as arrived:
        fcntl.flock(arrived, fcntl.LOCK_EX)  # workers append to one file: number the batches under a lock
        arrived.seek(0)
        number = arrived.read().count("\\n") + 1
        arrived.write(line)
        arrived.flush()
        fcntl.flock(arrived, fcntl.LOCK_UN)

    def allowed():
        try:
            return int((folder / "allowed").read_text() or 0)
        except (OSError, ValueError):
            return 0

    deadline = time.monotonic() + 120
    while allowed() < number and time.monotonic() < deadline:
        time.sleep(0.005)
'''


class Gate:
    """The test's side of a gate folder (created closed unless ``opened``)."""

    def __init__(self, folder: Path, opened: bool = False) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.allow(ALL if opened else 0)

    def __str__(self) -> str:
        return str(self.folder)

    def allow(self, batches: int) -> None:
        """Let the first ``batches`` batches (counted since the gate was made) through."""
        staged = self.folder / "allowed.new"
        staged.write_text(str(batches))
        staged.replace(self.folder / "allowed")  # one rename: a handler never reads half a number

    def open(self) -> None:
        self.allow(ALL)

    def close(self) -> None:
        """Hold every batch after those that have arrived."""
        self.allow(len(self.batches()))

    @contextmanager
    def held(self) -> Iterator[int]:
        """Hold every batch that arrives from now on; yields how many had arrived before. The gate opens
        again on the way out, whatever happened."""
        before = len(self.batches())
        self.allow(before)
        try:
            yield before
        finally:
            self.open()

    def _lines(self) -> list[str]:
        path = self.folder / "arrived"
        return path.read_text().split("\n")[:-1] if path.exists() else []

    def batches(self) -> list[list[float]]:
        """The first column of every batch that reached the gate, in order."""
        return [[float(word) for word in line.split("|", 1)[1].split()] for line in self._lines()]

    def pids(self) -> list[int]:
        """The process that ran each batch."""
        return [int(line.split("|", 1)[0]) for line in self._lines()]

    def wait_batches(self, count: int, timeout_s: float = 60.0) -> list[list[float]]:
        """Wait until ``count`` batches in all have reached the gate; returns them."""
        deadline = time.monotonic() + timeout_s
        while len(found := self.batches()) < count:
            assert time.monotonic() < deadline, f"only {len(found)} of {count} batches reached the gate: {found}"
            time.sleep(0.005)
        return found


ALL = 1_000_000


def wait_for(check: Callable[[], object], what: str, timeout_s: float = 60.0) -> None:
    """Poll ``check()`` until it is true; fail naming ``what`` after a generous deadline."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        time.sleep(0.01)
