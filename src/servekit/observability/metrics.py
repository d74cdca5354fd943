"""servekit's Prometheus metrics: every metric object, defined once, here.

One registry (prometheus-client's default). With ``servekit serve`` the values live in
prometheus-client's multiprocess files (``PROMETHEUS_MULTIPROC_DIR``, set by ``serve``
before any worker starts), so every worker writes its own file and the metrics server
(``servekit.observability.exposition``) adds them up. Counters and histograms are summed
over workers; each gauge says how (``multiprocess_mode``): ``livesum`` adds the live
workers' values, ``livemax`` takes the largest.

Hot path: per request one counter and one histogram child (looked up in a dict by
(protocol, outcome)), two in-flight gauge updates; per batch a few histogram
observations. Label children are resolved once per model version (``for_version``),
never by formatting strings per request.

Names, all in base units (seconds, rows, requests):

    servekit_requests_total{model,version,protocol,outcome}      counter
    servekit_request_duration_seconds{model,version,protocol}    histogram (data plane entry to answer)
    servekit_queue_duration_seconds{model,version}               histogram (per request, waiting for a batch)
    servekit_compute_duration_seconds{model,version}             histogram (per batch, the model running)
    servekit_batch_size{model,version}                           histogram (rows per batch)
    servekit_queue_depth{model,version}                          gauge (requests waiting)
    servekit_inflight_requests{model,version}                    gauge (accepted, not yet answered)
    servekit_model_ready{model,version}                          gauge (worker processes serving the version)
    servekit_model_instances{model,version}                      gauge (instances, over all workers)
    servekit_model_load_duration_seconds{model,version}          gauge (the last load, slowest worker)
    servekit_cache_hits_total{model,version}, servekit_cache_misses_total{model,version}   counters
    servekit_cache_errors_total{operation}                       counter (a failed cache call; served as a miss)

No gaps on a dashboard: every series a dashboard or alert reads exists at 0 from the moment a
version loads (``record_model_loaded``), not from its first request or first error, so a panel
of errors shows 0 rather than "No data". That is each (protocol, outcome) pair of
``SERVED_PROTOCOLS`` x ``REQUEST_OUTCOMES`` and each protocol's duration histogram for the
version, its per-version histograms, gauges and cache counters, and the cache error counter of
each operation.

With ``serve --triton-metrics`` (``use_triton_names(True)``, before any model loads) each version
also carries Triton's counters (``servekit.observability.triton_metrics``), in ``VersionMetrics.triton``;
off, that is None and nothing of them is created.
"""

from __future__ import annotations

from typing import Final, Literal

from prometheus_client import Counter, Gauge, Histogram

from servekit.observability import triton_metrics
from servekit.observability.triton_metrics import TritonVersionMetrics
from servekit.observability.triton_summaries import SummaryConfig

__all__ = [
    "BATCH_SIZE_BUCKETS",
    "DURATION_BUCKETS",
    "Protocol",
    "REQUEST_OUTCOMES",
    "SERVED_PROTOCOLS",
    "VersionMetrics",
    "for_version",
    "record_cache_error",
    "record_model_loaded",
    "record_model_unloaded",
    "use_triton_names",
]

# "http" and "grpc": the Open Inference Protocol over each transport; "simple_http" (/predict) and
# "simple_grpc" (modelserving.ModelService): the simple API; "torchserve_http": TorchServe's inference
# routes (/predictions, /explanations); "internal": an in-process caller.
Protocol = Literal["http", "grpc", "simple_http", "simple_grpc", "torchserve_http", "internal"]
# The protocols clients reach a model by (all but "internal"): the ones whose series exist from load.
SERVED_PROTOCOLS: Final = ("http", "grpc", "simple_http", "simple_grpc", "torchserve_http")
# How a request for a loaded version can end (servekit.observability.requests.outcome_of): success, the
# client going away, or an error of the error table that a request meets once it has a version.
# tests/observability/test_metrics.py keeps this in step with servekit.errors.
REQUEST_OUTCOMES: Final = ("success", "cancelled", "invalid_input", "invalid_schema", "payload_too_large",
                           "model_not_ready", "queue_full", "deadline_exceeded", "model_failed", "servekit_error")
_CACHE_OPERATIONS: Final = ("get", "set")

DURATION_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)
BATCH_SIZE_BUCKETS: Final = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

_VERSION = ("model", "version")

REQUESTS = Counter("servekit_requests", "Inference requests answered, by outcome ('success' or the error).",
                   [*_VERSION, "protocol", "outcome"])
REQUEST_DURATION = Histogram("servekit_request_duration_seconds",
                             "Time from the data plane receiving a request to its answer.",
                             [*_VERSION, "protocol"], buckets=DURATION_BUCKETS)
QUEUE_DURATION = Histogram("servekit_queue_duration_seconds", "Time a request waited in its batch queue.",
                           _VERSION, buckets=DURATION_BUCKETS)
COMPUTE_DURATION = Histogram("servekit_compute_duration_seconds", "Time the model ran on one batch.",
                             _VERSION, buckets=DURATION_BUCKETS)
BATCH_SIZE = Histogram("servekit_batch_size", "Rows per batch run.", _VERSION, buckets=BATCH_SIZE_BUCKETS)
QUEUE_DEPTH = Gauge("servekit_queue_depth", "Requests waiting in the batch queue.", _VERSION,
                    multiprocess_mode="livesum")
INFLIGHT = Gauge("servekit_inflight_requests", "Requests accepted by the data plane and not yet answered.",
                 _VERSION, multiprocess_mode="livesum")
MODEL_READY = Gauge("servekit_model_ready", "Worker processes in which the version is loaded and serving.",
                    _VERSION, multiprocess_mode="livesum")
MODEL_INSTANCES = Gauge("servekit_model_instances", "Model instances of the version, over all workers.",
                        _VERSION, multiprocess_mode="livesum")
MODEL_LOAD_DURATION = Gauge("servekit_model_load_duration_seconds", "How long the version took to load.",
                            _VERSION, multiprocess_mode="livemax")
CACHE_HITS = Counter("servekit_cache_hits", "Requests answered from the response cache.", _VERSION)
CACHE_MISSES = Counter("servekit_cache_misses", "Cacheable requests the response cache could not answer.",
                       _VERSION)
CACHE_ERRORS = Counter("servekit_cache_errors", "Failed cache calls (each served as a miss).", ["operation"])


class VersionMetrics:
    """The label children of one model version, resolved once (see ``for_version``)."""

    __slots__ = ("_durations", "_labels", "_requests", "batch_size", "cache_hits", "cache_misses",
                 "compute_duration", "inflight", "queue_depth", "queue_duration", "triton")

    def __init__(self, model: str, version: str) -> None:
        self._labels = (model, version)
        self._requests: dict[tuple[str, str], Counter] = {}
        self._durations: dict[str, Histogram] = {}
        self.queue_duration = QUEUE_DURATION.labels(model, version)
        self.compute_duration = COMPUTE_DURATION.labels(model, version)
        self.batch_size = BATCH_SIZE.labels(model, version)
        self.queue_depth = QUEUE_DEPTH.labels(model, version)
        self.inflight = INFLIGHT.labels(model, version)
        self.cache_hits = CACHE_HITS.labels(model, version)
        self.cache_misses = CACHE_MISSES.labels(model, version)
        # Only for a version that served requests: the label "" marks a request that never resolved one.
        self.triton = TritonVersionMetrics(model, version) if _triton_names and version else None

    def create_request_series(self) -> None:
        """Every request counter and duration histogram of the version at 0 (see the module docstring)."""
        for protocol in SERVED_PROTOCOLS:
            for outcome in REQUEST_OUTCOMES:
                if (protocol, outcome) not in self._requests:
                    self._requests[protocol, outcome] = REQUESTS.labels(*self._labels, protocol, outcome)
            if protocol not in self._durations:
                self._durations[protocol] = REQUEST_DURATION.labels(*self._labels, protocol)

    def record_request(self, protocol: str, outcome: str, seconds: float) -> None:
        counter = self._requests.get((protocol, outcome))
        if counter is None:
            counter = self._requests[protocol, outcome] = REQUESTS.labels(*self._labels, protocol, outcome)
        counter.inc()
        histogram = self._durations.get(protocol)
        if histogram is None:
            histogram = self._durations[protocol] = REQUEST_DURATION.labels(*self._labels, protocol)
        histogram.observe(seconds)


_BY_VERSION: dict[tuple[str, str], VersionMetrics] = {}
_triton_names = False


def use_triton_names(on: bool, summaries: SummaryConfig | None = None) -> None:
    """Keep Triton's counters beside servekit's for every version resolved from now on (``--triton-metrics``),
    with Triton's latency summaries when ``summaries`` asks for them (``--triton-metrics-config``).
    Call it before models load: versions already resolved keep what they had."""
    global _triton_names
    _triton_names = on
    triton_metrics.configure(summaries if on else None)


def for_version(model: str, version: str) -> VersionMetrics:
    """The (cached) label children of ``model`` at ``version`` ("" when the request never resolved one)."""
    metrics = _BY_VERSION.get((model, version))
    if metrics is None:
        metrics = _BY_VERSION[model, version] = VersionMetrics(model, version)
    return metrics


def record_model_loaded(model: str, version: str, instances: int, load_seconds: float, *,
                        cached: bool = False) -> None:
    """A version that now serves (called by the registry once it is swapped in). Its series, and the
    cache error series, exist from here on (at 0 until something happens); ``cached``: its config
    turns the response cache on (Triton's cache series exist for such a version only)."""
    chosen = for_version(model, version)
    chosen.create_request_series()
    if cached and chosen.triton is not None:
        chosen.triton.use_cache()
    for operation in _CACHE_OPERATIONS:
        CACHE_ERRORS.labels(operation)
    MODEL_READY.labels(model, version).inc()
    MODEL_INSTANCES.labels(model, version).inc(instances)
    MODEL_LOAD_DURATION.labels(model, version).set(load_seconds)


def record_model_unloaded(model: str, version: str, instances: int) -> None:
    """A version stops taking requests (unload, or replaced by a reload). Counts down rather than
    setting 0, because a reload swaps the new copy in before the old one retires."""
    MODEL_READY.labels(model, version).dec()
    MODEL_INSTANCES.labels(model, version).dec(instances)


def record_cache_error(operation: Literal["get", "set"]) -> None:
    CACHE_ERRORS.labels(operation).inc()
