"""The management API's describe document of one model version (pure: values in, a dict out).

TorchServe's fields first, in TorchServe 0.12's order, where servekit has the fact; then
servekit's own (``status``, ``platform``, ``device``, ``devices`` (one per instance), ``batching``, ``loadSeconds``,
``statistics``, ``reason``, ``default``, ``trafficWeight``). TorchServe's clients read the
fields they know and ignore the others (JSON objects; its own answers gain fields between
releases).

How TorchServe's fields map:

    modelVersion      the version's label: a TorchServe archive's modelVersion ("1.0"), else the number
    runtime           "python" for a TorchServe handler (the torchserve runtime), else servekit's runtime name
    minWorkers, maxWorkers   both the instances: servekit does not autoscale
    batchSize         max_batch_size; maxBatchDelay: batching.max_queue_delay_ms (a whole number as an int)
    responseTimeout   execution_timeout_s (null: none); clientTimeoutInMills: batching.timeout_ms (0: none)
    deviceType        "cpu" or "gpu" (gpu when any instance is on a GPU)
    loadedAtStartup   false for a model registered over the management API, true otherwise
    workers           one per instance (servekit's are threads of one process: its pid; memoryUsage 0, as
                      TorchServe reports without its metrics); ``gpu``: whether that instance is on a
                      GPU (which one: servekit's ``devices``, in worker order; a worker holds
                      TorchServe's keys only)
    jobQueueStatus    the batch queue: room left and requests waiting
    parallelType .. maxSequenceJobQueueSize   servekit has no model parallelism, continuous batching,
                      job tickets, per-model venvs or stateful sequences: their off values

Not given: startupTimeout and maxRetryTimeoutInSec (servekit has no such limits).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

from servekit.serving.entry import ModelEntry
from servekit.serving.version import LoadState, ModelVersion

__all__ = ["describe_failed", "describe_version"]

_TORCHSERVE_RUNTIME = "torchserve"
_NOTHING_OF_THAT_KIND: dict[str, Any] = {
    "parallelType": "", "parallelLevel": 0, "deviceType": None, "continuousBatching": False, "useJobTicket": False,
    "useVenv": False, "stateful": False, "sequenceMaxIdleMSec": 0, "sequenceTimeoutMSec": 0, "maxNumSequence": 0,
    "maxSequenceJobQueueSize": 0,
}


def _number(value: float | None) -> int | float | None:
    """A whole number as an int (TorchServe sends 50, not 50.0)."""
    if value is None:
        return None
    return int(value) if float(value).is_integer() else value


def _start_time(seconds: float) -> str:
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def describe_version(entry: ModelEntry, mv: ModelVersion, *, loaded_at_startup: bool) -> dict[str, Any]:
    """The describe document of a loaded version (see the module docstring)."""
    batching = mv.config.batching
    batcher = mv.batcher
    instances = batcher.instance_count
    devices = [mv.devices[i % len(mv.devices)] for i in range(instances)]  # a replaced instance keeps its slot
    document: dict[str, Any] = {
        "modelName": entry.name,
        "modelVersion": mv.label,
        "modelUrl": entry.source,
        "runtime": "python" if mv.runtime_name == _TORCHSERVE_RUNTIME else mv.runtime_name,
        "minWorkers": instances,
        "maxWorkers": instances,
        "batchSize": mv.max_batch_size,
        "maxBatchDelay": _number(batching.max_queue_delay_ms),
        "responseTimeout": _number(mv.config.execution_timeout_s),
        "clientTimeoutInMills": _number(batching.timeout_ms) or 0,
        **_NOTHING_OF_THAT_KIND,
        "deviceType": "cpu" if all(device == "cpu" for device in devices) else "gpu",
        "loadedAtStartup": loaded_at_startup,
        "workers": [{"id": f"{mv.name}:{mv.version}/{i}", "startTime": _start_time(mv.loaded_at),
                     "status": mv.state.value, "memoryUsage": 0, "pid": os.getpid(), "gpu": device != "cpu",
                     "gpuUsage": "N/A"} for i, device in enumerate(devices)],
        "jobQueueStatus": {"remainingCapacity": max(batching.max_queue_size - batcher.queue_depth, 0),
                           "pendingRequests": batcher.queue_depth},
    }
    default = entry.default_version()
    split = entry.config.traffic if entry.config else None
    document.update({
        "status": mv.state.value,
        "platform": mv.platform,
        "device": mv.device,
        "devices": devices,
        "batching": {
            "enabled": mv.max_batch_size > 0 and batching.enabled,
            "maxQueueSize": batching.max_queue_size,
            "preferredBatchSizes": list(batching.preferred_batch_sizes),
            "timeoutMs": batching.timeout_ms,
            "queueDepth": batcher.queue_depth,
            "busyInstances": batcher.busy,
        },
        "loadSeconds": round(mv.load_seconds, 4),
        "statistics": mv.stats.summary(mv.max_batch_size),
        "reason": entry.stale.get(mv.version, ""),
        "default": default is mv,
        "trafficWeight": split.get(mv.version, 0) if split else None,
    })
    return document


def describe_failed(entry: ModelEntry, version: int | None) -> dict[str, Any]:
    """A version that failed to load (or, with ``version`` None, a model with no version at all)."""
    if version is None:
        return {"modelName": entry.name, "modelVersion": None, "modelUrl": entry.source,
                "status": entry.state.value, "reason": entry.reason}
    return {"modelName": entry.name, "modelVersion": str(version), "modelUrl": entry.source,
            "status": LoadState.UNAVAILABLE.value, "reason": entry.failed_versions.get(version, "")}
