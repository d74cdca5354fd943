"""A gate for handler models: a test holds a model's batches until it opens the gate, and sees each
batch arrive, so tests wait for observable states instead of sleeping for a head start.

A gated handler calls ``wait_at_gate(self.context.parameters.get("gate"))`` (``GATE_HANDLER_CODE``
defines it; paste it into the handler's source): it appends the batch's first column to
``GATE/arrived`` (one line per batch), then waits until ``GATE/open`` exists (60 s at most, so a
failed test never leaves a server hanging). Files, not in-process events, so the same gate works in
a server process.
"""

from __future__ import annotations

import time
from pathlib import Path

__all__ = ["GATE_HANDLER_CODE", "Gate"]

GATE_HANDLER_CODE = '''
def wait_at_gate(gate, first_column):
    import pathlib
    import time
    if not gate:
        return
    folder = pathlib.Path(gate)
    with open(folder / "arrived", "a", encoding="utf-8") as arrived:
        arrived.write(" ".join(f"{float(value):g}" for value in first_column) + "\\n")
    deadline = time.monotonic() + 60
    while not (folder / "open").exists() and time.monotonic() < deadline:
        time.sleep(0.005)
'''


class Gate:
    """The test's side of a gate folder (created closed unless ``opened``)."""

    def __init__(self, folder: Path, opened: bool = False) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "open").unlink(missing_ok=True)
        if opened:
            self.open()

    def __str__(self) -> str:
        return str(self.folder)

    def open(self) -> None:
        (self.folder / "open").touch()

    def close(self) -> None:
        (self.folder / "open").unlink(missing_ok=True)

    def batches(self) -> list[list[float]]:
        """The first column of every batch that reached the gate, in order."""
        path = self.folder / "arrived"
        if not path.exists():
            return []
        return [[float(word) for word in line.split()] for line in path.read_text().split("\n")[:-1]]

    def wait_batches(self, count: int, timeout_s: float = 30.0) -> list[list[float]]:
        """Wait until ``count`` batches in all have reached the gate; returns them."""
        deadline = time.monotonic() + timeout_s
        while len(found := self.batches()) < count:
            assert time.monotonic() < deadline, f"only {len(found)} of {count} batches reached the gate: {found}"
            time.sleep(0.005)
        return found
