"""Triton's model configuration and statistics extensions, built from a ModelVersion.

Only the fields that tritonclient and perf_analyzer read are filled; dims exclude
the batch dimension when the model batches, as in Triton.
"""

from __future__ import annotations

from typing import Any

from servekit.serving.version import ModelVersion
from servekit.types import TensorSpec

__all__ = ["model_config", "model_statistics"]

_CONFIG_TYPES = {
    "BOOL": "TYPE_BOOL",
    "UINT8": "TYPE_UINT8",
    "UINT16": "TYPE_UINT16",
    "UINT32": "TYPE_UINT32",
    "UINT64": "TYPE_UINT64",
    "INT8": "TYPE_INT8",
    "INT16": "TYPE_INT16",
    "INT32": "TYPE_INT32",
    "INT64": "TYPE_INT64",
    "FP16": "TYPE_FP16",
    "FP32": "TYPE_FP32",
    "FP64": "TYPE_FP64",
    "BYTES": "TYPE_STRING",
}


def _dims(spec: TensorSpec, batched: bool) -> list[int]:
    return list(spec.shape[1:] if batched else spec.shape)


def model_config(version: ModelVersion) -> dict[str, Any]:
    batched = version.max_batch_size > 0
    batching = version.config.batching
    config: dict[str, Any] = {
        "name": version.name,
        "platform": version.platform,
        "backend": version.runtime_name,
        "max_batch_size": version.max_batch_size,
        "input": [{"name": s.name, "data_type": _CONFIG_TYPES[s.datatype], "dims": _dims(s, batched)}
                  for s in version.inputs],
        "output": [{"name": s.name, "data_type": _CONFIG_TYPES[s.datatype], "dims": _dims(s, batched)}
                   for s in version.outputs],
        "instance_group": [{"count": version.batcher.instance_count,
                            "kind": "KIND_GPU" if version.device == "cuda" else "KIND_CPU"}],
        "version_policy": {"specific": {"versions": [version.version]}},
    }
    if batched and batching.enabled:
        config["dynamic_batching"] = {
            "preferred_batch_size": list(batching.preferred_batch_sizes),
            "max_queue_delay_microseconds": int(batching.max_queue_delay_ms * 1000),
        }
    return config


def _duration(count: int, ns: int) -> dict[str, int]:
    return {"count": count, "ns": ns}


def model_statistics(version: ModelVersion) -> dict[str, Any]:
    s = version.stats
    return {
        "name": version.name,
        "version": str(version.version),
        "last_inference": s.last_inference_ms,
        "inference_count": s.inference_count,
        "execution_count": s.execution_count,
        "inference_stats": {
            "success": _duration(s.success_count, s.success_ns),
            "fail": _duration(s.failure_count, s.failure_ns),
            "queue": _duration(s.queue_count, s.queue_ns),
            "compute_input": _duration(s.compute_count, 0),
            "compute_infer": _duration(s.compute_count, s.compute_ns),
            "compute_output": _duration(s.compute_count, 0),
            "cache_hit": _duration(s.cache_hit_count, s.cache_hit_ns),
            "cache_miss": _duration(s.cache_miss_count, s.cache_miss_ns),
        },
        "batch_stats": [
            {
                "batch_size": size,
                "compute_input": _duration(entry.count, 0),
                "compute_infer": _duration(entry.count, entry.compute_ns),
                "compute_output": _duration(entry.count, 0),
            }
            for size, entry in sorted(s.batch_sizes.items())
        ],
    }
