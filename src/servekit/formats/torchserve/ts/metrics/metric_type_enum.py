"""``ts.metrics.metric_type_enum.MetricTypes``: the kinds of metric a handler may record."""

from __future__ import annotations

import enum

__all__ = ["MetricTypes"]


class MetricTypes(enum.Enum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"
