"""Triton's model configuration and statistics extensions, built from a ModelVersion.

Only the fields that tritonclient and perf_analyzer read are filled, from the version and
its servekit config alike for every model (config.yaml or Triton's config.pbtxt): dims
exclude the batch dimension when the model batches, ``version_policy`` and ``parameters``
(``{"k": {"string_value": "v"}}``) are the config's, ``dynamic_batching`` appears only when
requests batch, and ``backend`` is Triton's name for the runtime.
"""

from __future__ import annotations

from typing import Any

from servekit.config import VersionPolicy
from servekit.runtimes.placement import device_index
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


# servekit runtime -> the Triton backend that serves the same files.
_BACKENDS = {"onnx": "onnxruntime", "torchscript": "pytorch", "torch_export": "pytorch", "torch_pickle": "pytorch",
             "python": "python",
             "triton_python": "python"}


def _dims(spec: TensorSpec, batched: bool) -> list[int]:
    return list(spec.shape[1:] if batched else spec.shape)


def _tensor(spec: TensorSpec, batched: bool, optional: bool = False) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": spec.name, "data_type": _CONFIG_TYPES[spec.datatype],
                             "dims": _dims(spec, batched)}
    if optional:
        entry["optional"] = True
    return entry


def _version_policy(policy: VersionPolicy) -> dict[str, Any]:
    if policy.all:
        return {"all": {}}
    if policy.specific is not None:
        return {"specific": {"versions": list(policy.specific)}}
    return {"latest": {"num_versions": policy.latest or 1}}


def model_config(version: ModelVersion) -> dict[str, Any]:
    batched = version.max_batch_size > 0
    batching = version.config.batching
    optional = {tensor.name for tensor in version.config.inputs or () if tensor.optional}
    config: dict[str, Any] = {
        "name": version.name,
        "platform": version.platform,
        "backend": _BACKENDS.get(version.runtime_name, version.runtime_name),
        "version_policy": _version_policy(version.config.version_policy),
        "max_batch_size": version.max_batch_size,
        "input": [_tensor(s, batched, s.name in optional) for s in version.inputs],
        "output": [_tensor(s, batched) for s in version.outputs],
        "instance_group": _instance_groups(version),
        "parameters": {key: {"string_value": str(value)} for key, value in version.config.parameters.items()},
    }
    if version.config.model_file:
        config["default_model_filename"] = version.config.model_file
    if batched and batching.enabled:
        config["dynamic_batching"] = {
            "preferred_batch_size": list(batching.preferred_batch_sizes),
            "max_queue_delay_microseconds": int(batching.max_queue_delay_ms * 1000),
        }
    if version.config.cache.enabled:
        config["response_cache"] = {"enable": True}
    return config


def _instance_groups(version: ModelVersion) -> list[dict[str, Any]]:
    """Triton's instance_group: one group per device (a group's count is per GPU in Triton, so one GPU a group)."""
    counts: dict[str, int] = {}
    for device in version.devices:
        counts[device] = counts.get(device, 0) + 1
    if len(counts) == 1 and "cpu" in counts:
        return [{"name": f"{version.name}_0", "count": version.batcher.instance_count, "kind": "KIND_CPU"}]
    groups: list[dict[str, Any]] = []
    for number, (device, count) in enumerate(counts.items()):
        group: dict[str, Any] = {"name": f"{version.name}_{number}", "count": count}
        if device == "cpu":
            group["kind"] = "KIND_CPU"
        else:
            group.update(kind="KIND_GPU", gpus=[device_index(device)])
        groups.append(group)
    return groups


def _duration(count: int, ns: int) -> dict[str, int]:
    return {"count": count, "ns": ns}


def model_statistics(version: ModelVersion) -> dict[str, Any]:
    s = version.stats
    return {
        "name": version.name,
        "version": str(version.version),
        "devices": list(version.devices),  # servekit's: where each instance runs (Triton's clients skip it)
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
