"""The status snapshot: every model version with its state and live figures, for the status page.

A plain document (JSON-ready values only), built on demand from what the registry, the batchers
and ``ModelStats`` already hold; building it costs nothing per request. One row per model
version the repository index lists (a model with no version gets one row without a version).
"""

from __future__ import annotations

from typing import Any

from servekit.serving.registry import Registry
from servekit.serving.version import ModelVersion

__all__ = ["model_rows"]


def model_rows(registry: Registry, now_ns: int) -> list[dict[str, Any]]:
    """One row per model version: name, version, state, reason, and for a loaded version whether it
    is the default, its traffic share, runtime, device, batching limits, queue depth and the live
    figures of ``ModelStats.live`` at ``now_ns`` (time.perf_counter_ns)."""
    rows: list[dict[str, Any]] = []
    for indexed in registry.index():
        row: dict[str, Any] = {"model": indexed["name"], "version": indexed.get("version"),
                               "state": indexed["state"], "reason": indexed["reason"]}
        rows.append(row)
        if row["version"] is None:
            continue
        entry = registry.entry(row["model"])
        loaded = entry.versions.get(int(row["version"]))
        if loaded is None:
            continue
        default = entry.default_version()
        traffic = entry.config.traffic if entry.config is not None else None
        row.update(_loaded(loaded, now_ns))
        row["default"] = default is loaded
        row["traffic_percent"] = traffic.get(loaded.version, 0) if traffic else None
    return rows


def _loaded(version: ModelVersion, now_ns: int) -> dict[str, Any]:
    batcher = version.batcher
    stats = version.stats
    return {
        "label": version.label,
        "runtime": version.runtime_name,
        "device": version.device,
        "instances": batcher.instance_count,
        "busy_instances": batcher.busy,
        "max_batch_size": version.max_batch_size,
        "queue_depth": batcher.queue_depth,
        "requests_total": stats.success_count + stats.failure_count,
        "failures_total": stats.failure_count,
        **stats.live(now_ns),
    }
