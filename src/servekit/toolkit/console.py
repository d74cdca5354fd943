"""How the toolkit talks to the terminal: rich, to stderr for progress, to stdout for results.

Results (tables, recommendations) go to stdout so they can be piped; progress (spinners,
bars, step lines) goes to stderr and disappears when stderr is not a terminal, except the
one line per finished step, which is useful in a CI log too.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from rich.console import Console

__all__ = ["Steps", "error_console", "output_console"]


def output_console() -> Console:
    """Results: stdout, wide enough that tables do not wrap in logs and tests."""
    return Console(highlight=False, soft_wrap=True, width=None if Console().is_terminal else 120)


def error_console() -> Console:
    return Console(stderr=True, highlight=False, width=None if Console(stderr=True).is_terminal else 120)


class Steps:
    """A numbered sequence of steps, each shown with a spinner while it runs and a line when done."""

    def __init__(self, total: int, console: Console | None = None) -> None:
        self.total = total
        self.done = 0
        self.console = console or error_console()

    @contextlib.contextmanager
    def step(self, description: str) -> Iterator[None]:
        number = self.done + 1
        started = time.perf_counter()
        with self.console.status(f"[{number}/{self.total}] {description} ..."):
            yield
        self.done = number
        took = time.perf_counter() - started
        self.console.print(f"[{number}/{self.total}] {description} [green]done[/] ({took:.1f} s)")

    def note(self, text: str) -> None:
        self.console.print(f"      {text}")
