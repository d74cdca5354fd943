"""context.metrics: every call handlers make works, units are checked, values are kept."""

from __future__ import annotations

import pytest

from servekit.formats.torchserve.ts.metrics.cache import HandlerMetrics
from servekit.formats.torchserve.ts.metrics.dimension import Dimension
from servekit.formats.torchserve.ts.metrics.metric_type_enum import MetricTypes


def test_the_calls_handlers_make() -> None:
    metrics = HandlerMetrics()
    metrics.add_counter("Requests", 1)
    metrics.add_counter("Requests", 2, None, [Dimension("Level", "Model")])
    metrics.add_time("HandlerTime", 12.5, None, "ms")
    metrics.add_size("Payload", 3, unit="kB")
    metrics.add_percent("GPU", 40.0)
    metrics.add_metric("Custom", 7, "count", metric_type=MetricTypes.GAUGE)
    metrics.add_error("Errors", 1)
    metric = metrics.add_metric_to_cache("Loop", "count", ["ModelName"], MetricTypes.COUNTER)
    metric.add_or_update(2, ["m"])
    metrics.get_metric("Loop", MetricTypes.COUNTER).update(3, dimensions=[Dimension("ModelName", "m")])
    assert metrics.values == {"Requests": 3.0, "HandlerTime": 12.5, "Payload": 3.0, "GPU": 40.0, "Custom": 7.0,
                              "Errors": 1.0, "Loop": 5.0}


def test_bad_units_and_values_are_refused_as_torchserve_does() -> None:
    metrics = HandlerMetrics()
    with pytest.raises(ValueError, match="time"):
        metrics.add_time("T", 1, unit="minutes")
    with pytest.raises(ValueError, match="size"):
        metrics.add_size("S", 1, unit="TB")
    with pytest.raises(TypeError):
        metrics.add_counter("C", "many")  # type: ignore[arg-type]
    with pytest.raises(KeyError):
        metrics.get_metric("absent")
