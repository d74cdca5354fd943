"""The object a handler reaches as ``context.metrics``.

It takes every call TorchServe's metrics cache takes (``add_metric``, ``add_counter``,
``add_time``, ``add_size``, ``add_percent``, ``add_error``, ``get_metric``,
``add_metric_to_cache`` and a metric's ``add_or_update`` / ``update``), refuses the same bad
units, and keeps each metric's latest value (counters: their running sum) in memory, readable
through ``values``. Nothing is exported yet: a handler's metrics must never fail or slow its
requests, and servekit's own Prometheus metrics already time every batch.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

from servekit.formats.torchserve.ts.metrics.dimension import Dimension
from servekit.formats.torchserve.ts.metrics.metric_type_enum import MetricTypes

__all__ = ["HandlerMetric", "HandlerMetrics"]

_TIME_UNITS = ("ms", "s")
_SIZE_UNITS = ("MB", "kB", "GB", "B")


class HandlerMetric:
    """One named metric; ``values`` holds the latest value per set of dimension values."""

    def __init__(self, name: str, unit: str, dimension_names: Sequence[str], metric_type: MetricTypes,
                 lock: threading.Lock) -> None:
        self.name = name
        self.unit = unit
        self.dimension_names = list(dimension_names)
        self.metric_type = metric_type
        self.values: dict[tuple[str, ...], float] = {}
        self._lock = lock

    def add_or_update(self, value: float, dimension_values: Sequence[str] = (), request_id: str | None = None) -> None:
        """Counters add ``value``; gauges and histograms keep the latest one."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"metric {self.name!r}: value must be a number, not {type(value).__name__}")
        key = tuple(str(v) for v in dimension_values)
        with self._lock:
            if self.metric_type is MetricTypes.COUNTER:
                self.values[key] = self.values.get(key, 0.0) + float(value)
            else:
                self.values[key] = float(value)

    def update(self, value: float, request_id: str | None = None, dimensions: Sequence[Dimension] = ()) -> None:
        self.add_or_update(value, [d.value for d in dimensions], request_id)


class HandlerMetrics:
    """``context.metrics``: see the module docstring."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._metrics: dict[tuple[str, MetricTypes], HandlerMetric] = {}
        self.request_ids: Mapping[int, str] | None = None
        self.model_name: str | None = None

    @property
    def values(self) -> dict[str, float]:
        """Each metric's values summed over its dimensions, by name (for tests and diagnostics)."""
        with self._lock:
            return {name: sum(metric.values.values()) for (name, _), metric in self._metrics.items()}

    def add_metric_to_cache(self, metric_name: str, unit: str, dimension_names: Sequence[str] = (),
                            metric_type: MetricTypes = MetricTypes.COUNTER) -> HandlerMetric:
        with self._lock:
            metric = HandlerMetric(metric_name, unit, dimension_names, metric_type, self._lock)
            self._metrics[(metric_name, metric_type)] = metric
            return metric

    def get_metric(self, metric_name: str, metric_type: MetricTypes = MetricTypes.COUNTER) -> HandlerMetric:
        with self._lock:
            found = self._metrics.get((metric_name, metric_type))
        if found is None:
            raise KeyError(f"no {metric_type.value} metric named {metric_name!r}")
        return found

    def _record(self, name: str, value: float, unit: str, dimensions: Sequence[Dimension] | None,
                metric_type: MetricTypes) -> None:
        dims = list(dimensions or [])
        with self._lock:
            metric = self._metrics.get((name, metric_type))
        if metric is None:
            metric = self.add_metric_to_cache(name, unit, [d.name for d in dims], metric_type)
        metric.add_or_update(value, [d.value for d in dims])

    def add_metric(self, name: str, value: float, unit: str, idx: Any = None,
                   dimensions: Sequence[Dimension] | None = None,
                   metric_type: MetricTypes = MetricTypes.COUNTER) -> None:
        self._record(name, value, unit, dimensions, metric_type)

    def add_counter(self, name: str, value: float, idx: Any = None,
                    dimensions: Sequence[Dimension] | None = None) -> None:
        self._record(name, value, "count", dimensions, MetricTypes.COUNTER)

    def add_time(self, name: str, value: float, idx: Any = None, unit: str = "ms",
                 dimensions: Sequence[Dimension] | None = None, metric_type: MetricTypes = MetricTypes.GAUGE) -> None:
        if unit not in _TIME_UNITS:
            raise ValueError(f"metric {name!r}: a time's unit is one of {', '.join(_TIME_UNITS)}, not {unit!r}")
        self._record(name, value, unit, dimensions, metric_type)

    def add_size(self, name: str, value: float, idx: Any = None, unit: str = "MB",
                 dimensions: Sequence[Dimension] | None = None, metric_type: MetricTypes = MetricTypes.GAUGE) -> None:
        if unit not in _SIZE_UNITS:
            raise ValueError(f"metric {name!r}: a size's unit is one of {', '.join(_SIZE_UNITS)}, not {unit!r}")
        self._record(name, value, unit, dimensions, metric_type)

    def add_percent(self, name: str, value: float, idx: Any = None, dimensions: Sequence[Dimension] | None = None,
                    metric_type: MetricTypes = MetricTypes.GAUGE) -> None:
        self._record(name, value, "percent", dimensions, metric_type)

    def add_error(self, name: str, value: float, dimensions: Sequence[Dimension] | None = None) -> None:
        self._record(name, value, "", dimensions, MetricTypes.COUNTER)
