"""Recording one inference request: its metrics and its access log line, in one place.

The data plane wraps each request in a ``RequestObservation`` (a plain context manager,
cheap) and tells it the version once resolved and whether the cache answered; leaving the
block records the outcome, whether the request succeeded, failed or was cancelled. A
transport wraps its decoding in one made with ``rejections_only``: it records only a
request that the transport turns away (a body that does not parse, an unknown model),
since a request it passes on is recorded by the data plane.

Labels: a request that never resolved a model version is counted with version "" and
with its model's name only when such a model is registered (clients choose the names in
requests; they must not choose how many series the server keeps).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterable
from types import TracebackType

from servekit.errors import ServekitError
from servekit.observability import access, metrics, request_ids

__all__ = ["RequestObservation", "outcome_of"]

_OUTCOMES: dict[type[BaseException], str] = {}
_CLIENT_CLOSED = 499  # the client went away before the answer (nginx's convention)


def outcome_of(error: BaseException | None) -> tuple[str, int]:
    """(outcome label, HTTP status): ("success", 200), ("cancelled", 499), or the error class in
    snake case with its status from the error table (anything unexpected is "servekit_error", 500)."""
    if error is None:
        return "success", 200
    if isinstance(error, asyncio.CancelledError):
        return "cancelled", _CLIENT_CLOSED
    if not isinstance(error, ServekitError):
        return "servekit_error", 500
    kind = type(error)
    outcome = _OUTCOMES.get(kind)
    if outcome is None:
        outcome = _OUTCOMES[kind] = re.sub(r"(?<!^)(?=[A-Z])", "_", kind.__name__).lower()
    return outcome, error.http_status


class RequestObservation:
    """``with RequestObservation(protocol, model, request_id, model_names) as seen:`` around one request.

    ``model_names`` lists the registered models; it is called only for a request that failed
    before ``resolved``, to choose its model label.
    """

    __slots__ = ("_metrics", "_model_names", "_rejections_only", "_started", "cache", "model", "protocol",
                 "request_id", "version")

    def __init__(self, protocol: str, model: str, request_id: str | None,
                 model_names: Callable[[], Iterable[str]], *, rejections_only: bool = False) -> None:
        self.protocol = protocol
        self.model = model
        self.request_id = request_id
        self.version: str | None = None
        self.cache = "-"  # "hit" / "miss" once a cache was asked
        self._model_names = model_names
        self._rejections_only = rejections_only
        self._metrics: metrics.VersionMetrics | None = None
        self._started = 0

    def resolved(self, model: str, version: str) -> metrics.VersionMetrics:
        """The request runs on ``model`` at ``version``; counts it in flight until it is answered."""
        if self._metrics is not None:  # already resolved (the simple API resolves before inferring)
            return self._metrics
        self.model, self.version = model, version
        self._metrics = metrics.for_version(model, version)
        self._metrics.inflight.inc()
        return self._metrics

    def cached(self, hit: bool) -> None:
        """The response cache was asked (after ``resolved``) and had the answer or not."""
        self.cache = "hit" if hit else "miss"
        if self._metrics is not None:
            (self._metrics.cache_hits if hit else self._metrics.cache_misses).inc()

    def cache_timed(self, hit: bool, duration_ns: int) -> None:
        """Triton's cache series (``--triton-metrics``): a hit's lookup time, or a miss's lookup and store time."""
        if self._metrics is not None and self._metrics.triton is not None:
            self._metrics.triton.record_cache(hit, duration_ns)

    def __enter__(self) -> RequestObservation:
        self._started = time.perf_counter_ns()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if error is None and self._rejections_only:
            return
        elapsed_ns = time.perf_counter_ns() - self._started
        seconds = elapsed_ns / 1e9
        outcome, status = outcome_of(error)
        chosen = self._metrics
        if chosen is not None:
            chosen.inflight.dec()
            if chosen.triton is not None:  # serve --triton-metrics
                chosen.triton.record_request(error, elapsed_ns)
        else:
            chosen = metrics.for_version(self.model if self.model in self._model_names() else "", "")
        chosen.record_request(self.protocol, outcome, seconds)
        if self.request_id is None:  # the data plane passes the settled id; others settle it here
            self.request_id = request_ids.recorded(None)
        access.log_request(self.request_id, self.model, self.version, self.protocol, status, seconds * 1000,
                           self.cache)
