"""Where a model version's batches run: on an instance thread, or inline on the event loop.

Decided once per model version, at load (``choose_execution``), from ``batching.execution``:

- ``thread``: every batch runs on its instance's own thread (the loop keeps serving meanwhile);
- ``inline``: every batch runs on the event loop thread (one instance only);
- ``auto`` (default): inline when the model is known-fast, else thread. Known-fast means: one
  instance, a runtime that only computes (onnx, sklearn, torch; never a custom Python handler,
  which may block on I/O), inputs whose only open dimension is the batch, and a measured median
  compute of a one-row batch under ``INLINE_BELOW_S``. Anything else, including a probe that
  raises, chooses thread.

Why: handing a batch to a thread and the answer back (``run_in_executor`` plus a wake-up of
the loop) costs some 20-60 microseconds of the loop's time and two context switches; for the
demo MLP (about 20 microseconds of compute) that hand-off cost more than the model. A model
slow enough for the hand-off not to matter (100 microseconds and up) keeps its thread, so a
slow batch never stalls the loop for longer than that.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Final, Literal

import numpy as np

from servekit.runtimes.base import Runtime
from servekit.types import DATATYPES, Arrays, TensorSpec

__all__ = ["INLINE_BELOW_S", "INLINE_RUNTIMES", "Clock", "Execution", "choose_execution", "median_compute_s",
           "probe_clock", "probe_inputs"]

log = logging.getLogger("servekit.batching")

Execution = Literal["auto", "thread", "inline"]
Clock = Callable[[], float]

INLINE_BELOW_S: Final = 100e-6
INLINE_RUNTIMES: Final = frozenset({"onnx", "sklearn", "torch"})
_PROBE_RUNS: Final = 21
# The clock the ``auto`` probe reads. A seam for tests: a verdict taken from a measured speed would
# make them depend on the machine's load, so they replace it (with a fake clock) where it matters.
probe_clock: Clock = time.perf_counter


def probe_inputs(specs: Sequence[TensorSpec], batched: bool = True) -> Arrays | None:
    """Zeros for a one-row batch of every input (``batched``: the first dimension is the batch's),
    or None when a shape or datatype cannot be made up (another open dimension, or BYTES)."""
    arrays: Arrays = {}
    for spec in specs:
        fixed = spec.shape[1:] if batched else spec.shape
        if spec.datatype == "BYTES" or (batched and not spec.shape) or any(d < 0 for d in fixed):
            return None
        shape = (1, *fixed) if batched else tuple(fixed)
        arrays[spec.name] = np.zeros(shape, dtype=DATATYPES[spec.datatype])
    return arrays


def median_compute_s(runtime: Runtime, inputs: Arrays, runs: int = _PROBE_RUNS,
                     clearly_above: float | None = None, clock: Clock = time.perf_counter) -> float:
    """The median seconds of ``runtime.predict(inputs)`` over ``runs`` runs, after two warm-ups.
    ``clearly_above``: when the second warm-up already takes longer, its time is returned at
    once (a slow model's verdict needs no median, and 23 runs of it would lengthen its load).
    ``clock``: what time is read from (tests pass a fake one, so no verdict depends on the machine)."""
    for _ in range(2):
        started = clock()
        runtime.predict(inputs)
        warm = clock() - started
    if clearly_above is not None and warm > clearly_above:
        return warm
    timings: list[float] = []
    for _ in range(runs):
        started = clock()
        runtime.predict(inputs)
        timings.append(clock() - started)
    return statistics.median(timings)


def choose_execution(wanted: Execution, runtime_name: str, runtimes: Sequence[Runtime],
                     inputs: Sequence[TensorSpec], label: str, *, batched: bool = True,
                     clock: Clock | None = None) -> bool:
    """True to run batches inline on the event loop (see the module docstring). ``batched``: the
    inputs' first dimension is the batch; ``label`` names the version in the log line that
    reports an ``auto`` choice; ``clock`` times the probe (default: :data:`probe_clock`)."""
    if wanted != "auto":
        return wanted == "inline"
    if len(runtimes) != 1 or runtime_name not in INLINE_RUNTIMES:
        return False
    sample = probe_inputs(inputs, batched)
    if sample is None:
        return False
    try:
        seconds = median_compute_s(runtimes[0], sample, clearly_above=10 * INLINE_BELOW_S,
                                   clock=clock or probe_clock)
    except Exception as exc:  # a model that refuses zeros: nothing known, keep the thread
        log.info("%s: execution auto -> thread (the one-row probe raised %s)", label, type(exc).__name__)
        return False
    inline = seconds < INLINE_BELOW_S
    log.info("%s: execution auto -> %s (one-row batch: %.0f us median)", label, "inline" if inline else "thread",
             seconds * 1e6)
    return inline
