"""Triton's per-model metric names, kept beside servekit's own (``serve --triton-metrics``).

A Triton dashboard or alert reads these series; with the flag on, servekit's metrics page
carries them with Triton's names, types, labels and units, so such a dashboard keeps working:

    nv_inference_request_success{model,version}             counter  requests answered (a cache hit too)
    nv_inference_request_failure{model,reason,version}      counter  requests that reached a version and failed
    nv_inference_count{model,version}                       counter  rows run for successful requests (no cache hits)
    nv_inference_exec_count{model,version}                  counter  model executions (batches run)
    nv_inference_request_duration_us{model,version}         counter  microseconds, successful requests, end to end
    nv_inference_queue_duration_us{model,version}           counter  microseconds successful requests queued
    nv_inference_compute_input_duration_us{model,version}   counter  microseconds merging a batch's inputs, per request
    nv_inference_compute_infer_duration_us{model,version}   counter  microseconds the model ran, per request
    nv_inference_compute_output_duration_us{model,version}  counter  microseconds splitting outputs, per request

Failures carry Triton's ``reason``: REJECTED (queue full, not ready, deadline passed), BACKEND
(the model raised), CANCELED (the client went away) or OTHER; all four series exist from the
start, at zero, as in Triton. A request refused as malformed (400, 413, 422) is not a failure
here: Triton rejects such a request before it reaches the model's statistics.

The ``_us`` series are Triton's cumulative counters of whole microseconds (not histograms):
each successful request adds its own time, truncated to microseconds; a request that ran in a
batch of N adds that batch's compute times, as Triton does, so compute/success is the mean
compute a request saw. A custom Python handler (``python``, ``triton_python``, ``torchserve``
runtimes) sees each request whole: its time is all "infer", input and output add 0.

Cost: off (the default), a ``None`` check per request and per batch; nothing is created. On,
two counter writes per request and at most six per batch (not per request in the batch).

prometheus-client writes every counter with a ``_total`` sample (and OpenMetrics demands
it), which is not the name Triton's dashboards query; so these counters are kept out of the
default registry and written on the metrics page by ``render`` in Prometheus's text format,
as Triton writes them (see ``servekit.observability.exposition``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final

from prometheus_client import Counter

from servekit.errors import DeadlineExceeded, InvalidInput, ModelFailed, ModelNotReady, QueueFull

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

__all__ = ["FAMILIES", "TritonVersionMetrics", "collect_in_process", "is_triton_family", "render"]

_PREFIX: Final = "nv_inference_"

FAMILIES: Final = {
    "nv_inference_request_success": "Successful inference requests (each counts 1, whatever its batch size)",
    "nv_inference_request_failure": "Failed inference requests (each counts 1, whatever its batch size)",
    "nv_inference_count": "Inferences performed: rows of successful requests (cache hits excluded)",
    "nv_inference_exec_count": "Model executions: batches run (cache hits excluded)",
    "nv_inference_request_duration_us": "Cumulative end-to-end request time in microseconds (cache hits included)",
    "nv_inference_queue_duration_us": "Cumulative time requests waited in the batch queue, in microseconds",
    "nv_inference_compute_input_duration_us": "Cumulative time preparing batch inputs, in microseconds",
    "nv_inference_compute_infer_duration_us": "Cumulative time the model ran, in microseconds",
    "nv_inference_compute_output_duration_us": "Cumulative time splitting batch outputs, in microseconds",
}

_FAILURE: Final = "nv_inference_request_failure"
_REASONS: Final = ("OTHER", "BACKEND", "CANCELED", "REJECTED")
_REJECTED: Final = (QueueFull, ModelNotReady, DeadlineExceeded)


def _labels(name: str) -> tuple[str, ...]:
    return ("model", "reason", "version") if name == _FAILURE else ("model", "version")


# Not in the default registry (see the module docstring): in the multiprocess mode of ``serve``
# their values go to the value files all the same, where the metrics server reads them.
_COUNTERS = {name: Counter(name, help_text, _labels(name), registry=None) for name, help_text in FAMILIES.items()}


class TritonVersionMetrics:
    """The Triton counters of one model version, resolved once."""

    __slots__ = ("compute_infer", "compute_input", "compute_output", "exec_count", "failures", "inference_count",
                 "queue_us", "request_us", "success")

    def __init__(self, model: str, version: str) -> None:
        def child(name: str) -> Counter:
            return _COUNTERS[name].labels(model, version)

        self.success = child("nv_inference_request_success")
        self.failures = {reason: _COUNTERS[_FAILURE].labels(model, reason, version) for reason in _REASONS}
        self.inference_count = child("nv_inference_count")
        self.exec_count = child("nv_inference_exec_count")
        self.request_us = child("nv_inference_request_duration_us")
        self.queue_us = child("nv_inference_queue_duration_us")
        self.compute_input = child("nv_inference_compute_input_duration_us")
        self.compute_infer = child("nv_inference_compute_infer_duration_us")
        self.compute_output = child("nv_inference_compute_output_duration_us")

    def record_request(self, error: BaseException | None, duration_ns: int) -> None:
        """One answered request: a success adds its duration; a failure counts under its reason."""
        if error is None:
            self.success.inc()
            self.request_us.inc(duration_ns // 1000)
        elif not isinstance(error, InvalidInput):
            self.failures[_reason(error)].inc()

    def record_batch(self, succeeded: int, rows: int, queue_ns: Iterable[int], input_ns: int, infer_ns: int,
                     output_ns: int) -> None:
        """One batch run: ``succeeded`` of its requests got answers, with ``rows`` rows between them;
        ``queue_ns`` is how long each of those requests waited; the compute phases are the batch's."""
        self.exec_count.inc()
        if not succeeded:
            return
        self.inference_count.inc(rows)
        # Each write costs a lock and a file write under ``serve``: a zero is not written.
        for counter, amount in ((self.queue_us, sum(waited // 1000 for waited in queue_ns)),
                                (self.compute_input, succeeded * (input_ns // 1000)),
                                (self.compute_infer, succeeded * (infer_ns // 1000)),
                                (self.compute_output, succeeded * (output_ns // 1000))):
            if amount:
                counter.inc(amount)


def _reason(error: BaseException) -> str:
    if isinstance(error, asyncio.CancelledError):
        return "CANCELED"
    if isinstance(error, _REJECTED):
        return "REJECTED"
    return "BACKEND" if isinstance(error, ModelFailed) else "OTHER"


def is_triton_family(name: str) -> bool:
    return name.startswith(_PREFIX) and name in FAMILIES


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render(families: Iterable[Metric]) -> bytes:
    """Prometheus text (format 0.0.4) of the Triton families among ``families``, as Triton writes them:
    ``# TYPE name counter`` and samples named ``name`` (no ``_total``), integer values, labels in
    name order (``model``, ``reason``, ``version``). A family with no samples yet is left out."""
    found = {family.name: family for family in families if is_triton_family(family.name)}
    lines: list[str] = []
    for name, help_text in FAMILIES.items():
        family = found.get(name)
        samples = [] if family is None else [s for s in family.samples if s.name == f"{name}_total"]
        if not samples:
            continue
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} counter")
        keys = _labels(name)
        for sample in sorted(samples, key=lambda s: tuple(s.labels.get(key, "") for key in keys)):
            labels = ",".join(f'{key}="{_escape(sample.labels.get(key, ""))}"' for key in keys)
            lines.append(f"{name}{{{labels}}} {int(sample.value)}")
    return ("\n".join(lines) + "\n").encode() if lines else b""


def collect_in_process() -> list[Metric]:
    """The Triton families of this process (without the multiprocess files: tests, in-process use)."""
    return [family for counter in _COUNTERS.values() for family in counter.collect()]
