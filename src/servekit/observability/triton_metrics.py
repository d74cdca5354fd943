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
    nv_inference_pending_request_count{model,version}       gauge    requests queued, not yet executing
    nv_cache_num_hits_per_model{model,version}              counter  response cache hits      } only for a version
    nv_cache_hit_duration_per_model{model,version}          counter  microseconds looking up  } whose config turns
    nv_cache_num_misses_per_model{model,version}            counter  response cache misses    } the response cache
    nv_cache_miss_duration_per_model{model,version}         counter  microseconds looking up and storing  } on

Failures carry Triton's ``reason``: REJECTED (queue full, not ready, deadline passed), BACKEND
(the model raised), CANCELED (the client went away) or OTHER; all four series exist from the
start, at zero, as in Triton. A request refused as malformed (400, 413, 422) is not a failure
here: Triton rejects such a request before it reaches the model's statistics.

The ``_us`` series are Triton's cumulative counters of whole microseconds (not histograms):
each successful request adds its own time, truncated to microseconds; a request that ran in a
batch of N adds that batch's compute times, as Triton does, so compute/success is the mean
compute a request saw. A custom Python handler (``python``, ``triton_python``, ``torchserve``
runtimes) sees each request whole: its time is all "infer", input and output add 0.

The pending count is the version's batch queue: a request counts from the moment it is queued
until a batch takes it to an instance (a request split into batch-sized parts counts each part).

With ``--triton-metrics-config summary_latencies=true`` each version also has Triton's latency
summaries (``servekit.observability.triton_summaries``): ``nv_inference_{request,queue,
compute_input,compute_infer,compute_output}_summary_us`` and, for a cached version,
``nv_cache_{hit,miss}_summary_per_model``; as in Triton, a version with the response cache on has
no request summary, and a cache hit observes 0 microseconds in the queue summary (Triton counts
hits there too; servekit looks the cache up before the queue). Machine-wide gauges (``nv_cpu_*``, ``nv_gpu_*``) are in
``servekit.observability.triton_system``.

Cost: off (the default), a ``None`` check per request and per batch; nothing is created. On,
two counter writes per request and at most six per batch (not per request in the batch), one
gauge write when the queue's depth changes; summaries add one observation per request and phase.

prometheus-client writes every counter with a ``_total`` sample (and OpenMetrics demands
it), which is not the name Triton's dashboards query; so these counters are kept out of the
default registry and written on the metrics page by ``render`` in Prometheus's text format,
as Triton writes them (see ``servekit.observability.exposition``).
"""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Final

from prometheus_client import Counter, Gauge

from servekit.errors import DeadlineExceeded, InvalidInput, ModelFailed, ModelNotReady, QueueFull
from servekit.observability.triton_summaries import LatencySummary, SummaryConfig, window_quantiles

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from servekit.observability.triton_summary_files import Publisher

__all__ = ["FAMILIES", "SUMMARIES", "TritonVersionMetrics", "collect_in_process", "configure", "is_triton_family",
           "number_text", "render", "serve_page_here"]

MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"

_PENDING: Final = "nv_inference_pending_request_count"
# name -> (type, help), in the order Triton's page has them.
FAMILIES: Final = {
    "nv_inference_request_success": ("counter", "Successful inference requests (each counts 1, whatever its batch "
                                     "size)"),
    "nv_inference_request_failure": ("counter", "Failed inference requests (each counts 1, whatever its batch size)"),
    "nv_inference_count": ("counter", "Inferences performed: rows of successful requests (cache hits excluded)"),
    "nv_inference_exec_count": ("counter", "Model executions: batches run (cache hits excluded)"),
    "nv_inference_request_duration_us": ("counter", "Cumulative end-to-end request time in microseconds (cache hits "
                                         "included)"),
    "nv_inference_queue_duration_us": ("counter", "Cumulative time requests waited in the batch queue, in "
                                       "microseconds"),
    "nv_inference_compute_input_duration_us": ("counter", "Cumulative time preparing batch inputs, in microseconds"),
    "nv_inference_compute_infer_duration_us": ("counter", "Cumulative time the model ran, in microseconds"),
    "nv_inference_compute_output_duration_us": ("counter", "Cumulative time splitting batch outputs, in "
                                                "microseconds"),
    "nv_cache_num_hits_per_model": ("counter", "Requests answered from the response cache"),
    "nv_cache_hit_duration_per_model": ("counter", "Cumulative time looking up cache hits, in microseconds"),
    "nv_cache_num_misses_per_model": ("counter", "Cacheable requests the response cache could not answer"),
    "nv_cache_miss_duration_per_model": ("counter", "Cumulative time looking up and storing cache misses, in "
                                         "microseconds"),
    _PENDING: ("gauge", "Requests waiting in the batch queue, not yet executing"),
}
# Written only with summary_latencies=true: name -> help.
SUMMARIES: Final = {
    "nv_inference_request_summary_us": "End-to-end request time of successful requests in microseconds, "
                                       "quantiles over the last minute",
    "nv_inference_queue_summary_us": "Time successful requests waited in the batch queue in microseconds, "
                                     "quantiles over the last minute",
    "nv_inference_compute_input_summary_us": "Time preparing batch inputs in microseconds, per request, "
                                             "quantiles over the last minute",
    "nv_inference_compute_infer_summary_us": "Time the model ran in microseconds, per request, quantiles over the "
                                             "last minute",
    "nv_inference_compute_output_summary_us": "Time splitting batch outputs in microseconds, per request, "
                                              "quantiles over the last minute",
    "nv_cache_hit_summary_per_model": "Time looking up cache hits in microseconds, quantiles over the last minute",
    "nv_cache_miss_summary_per_model": "Time looking up and storing cache misses in microseconds, quantiles over "
                                       "the last minute",
}

_FAILURE: Final = "nv_inference_request_failure"
_REASONS: Final = ("OTHER", "BACKEND", "CANCELED", "REJECTED")
_REJECTED: Final = (QueueFull, ModelNotReady, DeadlineExceeded)
_CACHE_FAMILIES: Final = ("nv_cache_num_hits_per_model", "nv_cache_hit_duration_per_model",
                          "nv_cache_num_misses_per_model", "nv_cache_miss_duration_per_model")
_PHASES: Final = ("queue", "compute_input", "compute_infer", "compute_output")


def _labels(name: str) -> tuple[str, ...]:
    return ("model", "reason", "version") if name == _FAILURE else ("model", "version")


# Not in the default registry (see the module docstring): in the multiprocess mode of ``serve``
# their values go to the value files all the same, where the metrics server reads them.
_COUNTERS = {name: Counter(name, help_text, _labels(name), registry=None)
             for name, (kind, help_text) in FAMILIES.items() if kind == "counter"}
_PENDING_GAUGE = Gauge(_PENDING, FAMILIES[_PENDING][1], _labels(_PENDING), registry=None,
                       multiprocess_mode="livesum")
# (family, model, version) -> the series of this process; ``render`` reads them here, or, in a worker
# of several, a Publisher writes them to a file for the metrics server (triton_summary_files).
_SUMMARY_SERIES: dict[tuple[str, str, str], LatencySummary] = {}
_summary_config: SummaryConfig | None = None
_page_pid: int | None = None  # the process that serves the metrics page (``serve_page_here``)
_publisher: Publisher | None = None


def serve_page_here() -> None:
    """This process serves the metrics page: its summaries are read in memory, not written to a file."""
    global _page_pid
    _page_pid = os.getpid()


def _publish_if_worker() -> None:
    """In a process other than the page's, under ``serve`` (multiprocess files), start writing the
    summaries for the page (once)."""
    global _publisher
    folder = os.environ.get(MULTIPROC_ENV)
    if _publisher is None and folder and os.getpid() != _page_pid:
        from servekit.observability.triton_summary_files import Publisher

        _publisher = Publisher(Path(folder), lambda: dict(_SUMMARY_SERIES)).start()


def configure(summaries: SummaryConfig | None) -> None:
    """Keep latency summaries for every version created from now on (``summary_latencies=true``), or not."""
    global _summary_config
    _summary_config = summaries if summaries is not None and summaries.summary_latencies else None


class TritonVersionMetrics:
    """The Triton series of one model version, resolved once."""

    __slots__ = ("_labels", "_quantiles", "cache", "compute_infer", "compute_input", "compute_output", "exec_count",
                 "failures", "inference_count", "pending", "queue_us", "request_us", "success", "summaries")

    def __init__(self, model: str, version: str) -> None:
        def child(name: str) -> Counter:
            return _COUNTERS[name].labels(model, version)

        self._labels = (model, version)
        self.success = child("nv_inference_request_success")
        self.failures = {reason: _COUNTERS[_FAILURE].labels(model, reason, version) for reason in _REASONS}
        self.inference_count = child("nv_inference_count")
        self.exec_count = child("nv_inference_exec_count")
        self.request_us = child("nv_inference_request_duration_us")
        self.queue_us = child("nv_inference_queue_duration_us")
        self.compute_input = child("nv_inference_compute_input_duration_us")
        self.compute_infer = child("nv_inference_compute_infer_duration_us")
        self.compute_output = child("nv_inference_compute_output_duration_us")
        self.pending = _PENDING_GAUGE.labels(model, version)
        self.cache: tuple[Counter, Counter, Counter, Counter] | None = None  # hits, hit us, misses, miss us
        # "request", the four phases, "cache_hit", "cache_miss" -> the series, when summaries are on
        self.summaries: dict[str, LatencySummary] = {}
        self._quantiles = None if _summary_config is None else _summary_config.quantiles
        if self._quantiles is not None:
            for part in ("request", *_PHASES):
                self._summary(part, f"nv_inference_{part}_summary_us")

    def _summary(self, part: str, family: str) -> None:
        assert self._quantiles is not None
        series = self.summaries[part] = LatencySummary(self._quantiles)
        _SUMMARY_SERIES[(family, *self._labels)] = series
        _publish_if_worker()

    def use_cache(self) -> None:
        """The version's config turns the response cache on: its cache series exist from here, and
        (as in Triton) it has no request summary."""
        if self.cache is not None:
            return
        hits, hit_us, misses, miss_us = (_COUNTERS[name].labels(*self._labels) for name in _CACHE_FAMILIES)
        self.cache = (hits, hit_us, misses, miss_us)
        if self._quantiles is not None:
            self.summaries.pop("request", None)
            _SUMMARY_SERIES.pop(("nv_inference_request_summary_us", *self._labels), None)
            self._summary("cache_hit", "nv_cache_hit_summary_per_model")
            self._summary("cache_miss", "nv_cache_miss_summary_per_model")

    def record_request(self, error: BaseException | None, duration_ns: int) -> None:
        """One answered request: a success adds its duration; a failure counts under its reason."""
        if error is None:
            self.success.inc()
            self.request_us.inc(duration_ns // 1000)
            if (summary := self.summaries.get("request")) is not None:
                summary.observe(duration_ns // 1000)
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
        waited = [each // 1000 for each in queue_ns]
        phases = (input_ns // 1000, infer_ns // 1000, output_ns // 1000)
        # Each write costs a lock and a file write under ``serve``: a zero is not written.
        for counter, amount in ((self.queue_us, sum(waited)), (self.compute_input, succeeded * phases[0]),
                                (self.compute_infer, succeeded * phases[1]),
                                (self.compute_output, succeeded * phases[2])):
            if amount:
                counter.inc(amount)
        if self.summaries:
            for microseconds in waited:
                self.summaries["queue"].observe(microseconds)
            for part, microseconds in zip(_PHASES[1:], phases, strict=True):
                self.summaries[part].observe(microseconds, times=succeeded)

    def record_cache(self, hit: bool, duration_ns: int) -> None:
        """One response-cache answer: a hit (its lookup time) or a miss (its lookup and store time)."""
        if self.cache is None:
            self.use_cache()
        assert self.cache is not None
        count, microseconds = self.cache[0:2] if hit else self.cache[2:4]
        count.inc()
        if duration_ns >= 1000:
            microseconds.inc(duration_ns // 1000)
        if (summary := self.summaries.get("cache_hit" if hit else "cache_miss")) is not None:
            summary.observe(duration_ns // 1000)
            if hit:  # Triton's queue summary counts a hit too; servekit looks up before the queue: 0 waited
                self.summaries["queue"].observe(0)


def _reason(error: BaseException) -> str:
    if isinstance(error, asyncio.CancelledError):
        return "CANCELED"
    if isinstance(error, _REJECTED):
        return "REJECTED"
    return "BACKEND" if isinstance(error, ModelFailed) else "OTHER"


def is_triton_family(name: str) -> bool:
    return name in FAMILIES


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _label_text(pairs: Iterable[tuple[str, str]]) -> str:
    return ",".join(f'{key}="{_escape(value)}"' for key, value in pairs)


def number_text(value: float) -> str:
    """A sample's value as Triton writes it: whole numbers without a fraction, NaN for an empty window."""
    if math.isnan(value):
        return "NaN"
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _summary_lines(folder: Path | None) -> list[str]:
    """This process's summaries, with those other processes wrote to ``folder`` added in."""
    if not _SUMMARY_SERIES and (folder is None or not any(folder.glob("triton_summaries_*.json"))):
        return []  # summaries are off (the files' module, and ddsketch, are imported only when they are on)
    from servekit.observability.triton_summary_files import Merged, read_other_processes

    merged = {} if folder is None else read_other_processes(folder)
    for key, summary in list(_SUMMARY_SERIES.items()):
        count, total, slices = summary.state()
        into = merged.get(key)
        if into is None:
            into = merged[key] = Merged(summary.quantiles)
        into.count += count
        into.total += total
        into.slices.extend(slices)
    lines: list[str] = []
    for name, help_text in SUMMARIES.items():
        series = sorted((key[1:], value) for key, value in merged.items() if key[0] == name)
        if not series:
            continue
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} summary"]
        for (model, version), value in series:
            labels = _label_text((("model", model), ("version", version)))
            lines += [f"{name}_count{{{labels}}} {value.count}", f"{name}_sum{{{labels}}} {value.total}"]
            lines += [f'{name}{{{labels},quantile="{quantile!r}"}} {number_text(estimate)}'
                      for quantile, estimate in window_quantiles(value.slices, value.quantiles)]
    return lines


def render(families: Iterable[Metric], folder: Path | None = None) -> bytes:
    """Prometheus text (format 0.0.4) of the Triton families among ``families``, and of the summaries
    (this process's, and those other processes wrote to ``folder``), as Triton writes them: ``# TYPE
    name counter`` and samples named ``name`` (no ``_total``), integer values, labels in name order
    (``model``, ``reason``, ``version``; a summary's ``quantile`` last). A family with no samples yet
    is left out."""
    found = {family.name: family for family in families if is_triton_family(family.name)}
    lines: list[str] = []
    for name, (kind, help_text) in FAMILIES.items():
        family = found.get(name)
        sample_name = f"{name}_total" if kind == "counter" else name
        samples = [] if family is None else [s for s in family.samples if s.name == sample_name]
        if not samples:
            continue
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        keys = _labels(name)
        for sample in sorted(samples, key=lambda s: tuple(s.labels.get(key, "") for key in keys)):
            labels = _label_text((key, sample.labels.get(key, "")) for key in keys)
            lines.append(f"{name}{{{labels}}} {int(sample.value)}")
    lines += _summary_lines(folder)
    return ("\n".join(lines) + "\n").encode() if lines else b""


def collect_in_process() -> list[Metric]:
    """The Triton families of this process (without the multiprocess files: tests, in-process use)."""
    return [family for metric in (*_COUNTERS.values(), _PENDING_GAUGE) for family in metric.collect()]
