"""``ts.handler_utils.timer.timed``: records how long a handler method took, in ms, as the
gauge ``ts_handler_<method>`` of the handler's ``context.metrics`` (when it has one)."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, TypeVar

from servekit.formats.torchserve.ts.metrics.metric_type_enum import MetricTypes

__all__ = ["timed"]

F = TypeVar("F", bound=Callable[..., Any])


def timed(method: F) -> F:
    @functools.wraps(method)
    def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        result = method(self, *args, **kwargs)
        metrics = getattr(getattr(self, "context", None), "metrics", None)
        if metrics is not None:
            elapsed_ms = round((time.perf_counter() - started) * 1000, 2)
            metrics.add_metric(f"ts_handler_{method.__name__}", elapsed_ms, "ms", metric_type=MetricTypes.GAUGE)
        return result

    return run  # type: ignore[return-value]
