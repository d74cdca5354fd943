"""A Triton config.pbtxt turned into servekit's own ModelConfig (pure: text in, ModelConfig out).

Every decision about Triton's configuration is made here, at the edge; nothing past the
returned ModelConfig knows the model came from a Triton repository. Errors are ConfigError
``<file>: <Triton field>: what is wrong``; fields servekit does not declare are logged as a
warning naming each one.

What maps to what:

- platform / backend: ``onnxruntime_onnx`` (backend ``onnxruntime``) -> runtime ``onnx``,
  ``pytorch_libtorch`` (``pytorch``) -> ``torchscript``, ``python`` -> ``triton_python``;
  any other is refused. Neither set: servekit tells the runtime by the version's files.
  The platform (else the backend) is what model metadata reports.
- ``max_batch_size`` > 0: dims exclude the batch dimension, so every servekit shape gets a
  leading -1; 0: dims are full shapes and nothing batches.
- ``dynamic_batching``: batching across requests, with its preferred sizes, delay, queue bound
  and queue timeout (action REJECT; DELAY never rejects, so no timeout). Without it Triton's
  default scheduler runs each request on its own, and so does servekit (batching disabled).
  A request with more rows than ``max_batch_size`` is refused, as Triton does.
- ``instance_group``: instances are the sum of the groups' counts (per listed GPU), each on its
  group's device: KIND_GPU with ``gpus`` -> ``count`` instances on each listed GPU (cuda:N),
  KIND_GPU without -> cuda, KIND_CPU -> cpu; groups of several devices become servekit's device
  list (one entry per instance, servekit.runtimes.placement). KIND_AUTO / KIND_MODEL alone ->
  auto (a GPU when there is one, as Triton places them); beside explicit groups, they take
  the GPU when any group asks for one, else the CPU.
- ``version_policy``, ``default_model_filename`` (-> model_file), ``parameters`` (their
  string values), ``optional`` inputs, ``response_cache``.
- ``dynamic_batching`` batches with ``batching.hold_when_idle: adaptive``: an idle instance waits
  (at most ``max_queue_delay_microseconds``) only for as many requests as were recently
  outstanding at once, so under load batches fill as in Triton, and a lone client's request runs
  at once. Triton holds every batch for the delay, even a lone request on an idle instance.
- servekit's own knobs, as parameters (Triton ignores parameters it does not know, so the
  folder still serves there): ``servekit.execution`` (``auto``, ``thread`` or ``inline``) ->
  ``batching.execution``; ``servekit.hold_when_idle`` (``true``: Triton's rule above;
  ``false``: servekit's own, an idle instance takes what is queued at once; ``adaptive``, the
  default) -> ``batching.hold_when_idle``; where a config.yaml would say them (a folder holds one config only).
- refused with a reason: sequence batching, ensembles, decoupled transaction policy, shape
  tensors, BF16, and ``reshape`` except for python backend models (whose runtime applies it).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from pydantic import ValidationError

from servekit.config import ModelConfig
from servekit.errors import ConfigError
from servekit.formats.triton.pbtxt import parse_pbtxt
from servekit.grpc.generated import model_config_pb2 as pb

__all__ = ["DATATYPES", "EXECUTION_PARAMETER", "RUNTIMES", "parse_triton_config", "to_model_config",
           "tensor_index_order"]

log = logging.getLogger("servekit.formats.triton")

# Triton's platform or backend name -> servekit runtime.
RUNTIMES = {
    "onnxruntime_onnx": "onnx",
    "onnxruntime": "onnx",
    "pytorch_libtorch": "torchscript",
    "pytorch": "torchscript",
    "python": "triton_python",
}

# Triton's TYPE_* -> Open Inference Protocol datatype (TYPE_STRING is BYTES).
DATATYPES = {
    pb.TYPE_BOOL: "BOOL", pb.TYPE_UINT8: "UINT8", pb.TYPE_UINT16: "UINT16", pb.TYPE_UINT32: "UINT32",
    pb.TYPE_UINT64: "UINT64", pb.TYPE_INT8: "INT8", pb.TYPE_INT16: "INT16", pb.TYPE_INT32: "INT32",
    pb.TYPE_INT64: "INT64", pb.TYPE_FP16: "FP16", pb.TYPE_FP32: "FP32", pb.TYPE_FP64: "FP64",
    pb.TYPE_STRING: "BYTES",
}

_INDEXED_NAME = re.compile(r"^.+__(\d+)$")

# The config.pbtxt parameter that sets batching.execution (see the module docstring).
EXECUTION_PARAMETER = "servekit.execution"
_EXECUTIONS = ("auto", "thread", "inline")
# The config.pbtxt parameter that sets batching.hold_when_idle (true: Triton's own rule; default adaptive).
HOLD_PARAMETER = "servekit.hold_when_idle"


def parse_triton_config(text: str, source: str, folder_name: str) -> ModelConfig:
    """Parse config.pbtxt text (``source`` names it in messages) into servekit's ModelConfig."""
    message, unknown = parse_pbtxt(text, source)
    config = to_model_config(message, source, folder_name)
    if unknown:
        log.warning("%s: skipped fields servekit does not know: %s", source, ", ".join(unknown))
    return config


def to_model_config(message: pb.ModelConfig, source: str, folder_name: str) -> ModelConfig:
    """Map a parsed Triton ModelConfig onto servekit's (see the module docstring)."""
    where = f"{source}: "
    if message.name and message.name != folder_name:
        raise ConfigError(f"{where}name: {message.name!r} differs from its folder {folder_name!r}; "
                          "Triton requires them to be equal")
    runtime = _runtime(message, where)
    _refuse_unserved(message, runtime, where)
    if message.max_batch_size < 0:
        raise ConfigError(f"{where}max_batch_size: {message.max_batch_size} is negative")
    batched = message.max_batch_size > 0
    raw: dict[str, Any] = {
        "name": message.name or None,
        "runtime": runtime,
        "platform": message.platform or message.backend or None,
        "model_file": message.default_model_filename or None,
        "inputs": [_tensor(t, "input", i, batched, where) for i, t in tensor_index_order(message.input)],
        "outputs": [_tensor(t, "output", i, batched, where) for i, t in tensor_index_order(message.output)],
        "max_batch_size": message.max_batch_size,
        "batching": {**_batching(message, where), **_execution(message, where)},
        "version_policy": _version_policy(message.version_policy, where),
        "parameters": {key: value.string_value for key, value in message.parameters.items()},
        "cache": {"enabled": message.response_cache.enable},
        **_instances(message.instance_group, where),
    }
    if raw["batching"].get("execution") == "inline" and raw["instances"] > 1:
        raise ConfigError(f"{where}parameters {EXECUTION_PARAMETER}: inline runs one instance on the event loop; "
                          f"instance_group gives {raw['instances']}")
    if runtime == "torchscript" and not (raw["inputs"] and raw["outputs"]):
        raise ConfigError(f"{where}input/output: a TorchScript model cannot describe its tensors; declare both")
    try:
        return ModelConfig.model_validate({key: value for key, value in raw.items() if value not in (None, [])})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
        raise ConfigError(f"{where}{problems}") from None


def tensor_index_order(tensors: Any) -> list[tuple[int, Any]]:
    """Tensors with their position in the config. When every name follows Triton's
    ``NAME__<index>`` convention (as libtorch models are named, ``INPUT__0``), they are ordered
    by that index: the model takes and returns them positionally in that order."""
    listed = list(enumerate(tensors))
    matches = [_INDEXED_NAME.match(tensor.name) for _, tensor in listed]
    if listed and all(matches):
        order = sorted(range(len(listed)), key=lambda i: int(matches[i].group(1)))  # type: ignore[union-attr]
        return [listed[i] for i in order]
    return listed


def _runtime(message: pb.ModelConfig, where: str) -> str | None:
    names = [name for name in (message.platform, message.backend) if name]
    if "ensemble" in names or message.HasField("ensemble_scheduling"):
        raise ConfigError(f"{where}platform: ensembles are not served by servekit; serve the steps as models")
    unknown = [name for name in names if name not in RUNTIMES]
    if unknown:
        field = "platform" if unknown[0] == message.platform else "backend"
        raise ConfigError(f"{where}{field}: {unknown[0]!r} is not served by servekit (served: onnxruntime_onnx "
                          "or backend onnxruntime, pytorch_libtorch or backend pytorch, backend python)")
    runtimes = {RUNTIMES[name] for name in names}
    if len(runtimes) > 1:
        raise ConfigError(f"{where}platform {message.platform!r} and backend {message.backend!r} disagree")
    return runtimes.pop() if runtimes else None


def _refuse_unserved(message: pb.ModelConfig, runtime: str | None, where: str) -> None:
    if message.HasField("sequence_batching"):
        raise ConfigError(f"{where}sequence_batching: stateful (sequence) models are not served by servekit")
    if message.model_transaction_policy.decoupled:
        raise ConfigError(f"{where}model_transaction_policy.decoupled: decoupled models (any number of "
                          "responses per request) are not served by servekit")
    for kind, tensors in (("input", message.input), ("output", message.output)):
        for tensor in tensors:
            if tensor.is_shape_tensor:
                raise ConfigError(f"{where}{kind} {tensor.name}: is_shape_tensor: shape tensors (TensorRT) "
                                  "are not served by servekit")
            if tensor.HasField("reshape") and runtime != "triton_python":
                raise ConfigError(f"{where}{kind} {tensor.name}: reshape: servekit applies reshape for python "
                                  "backend models only")


def _tensor(tensor: Any, kind: str, index: int, batched: bool, where: str) -> dict[str, Any]:
    label = f"{where}{kind}[{index}]"
    if not tensor.name:
        raise ConfigError(f"{label}: name: missing")
    datatype = DATATYPES.get(tensor.data_type)
    if datatype is None:
        type_name = pb.DataType.Name(tensor.data_type)
        raise ConfigError(f"{label} ({tensor.name}): data_type: {type_name} is not served by servekit")
    dims = list(tensor.dims)
    if any(dim < -1 or dim == 0 for dim in dims):
        raise ConfigError(f"{label} ({tensor.name}): dims: {dims}: each is positive, or -1 for any size")
    spec: dict[str, Any] = {"name": tensor.name, "datatype": datatype, "shape": [-1, *dims] if batched else dims}
    if kind == "input" and tensor.optional:
        spec["optional"] = True
    return spec


def _batching(message: pb.ModelConfig, where: str) -> dict[str, Any]:
    if not message.HasField("dynamic_batching"):
        return {"enabled": False, "oversize": "reject"}  # Triton's default scheduler: each request alone
    dynamic = message.dynamic_batching
    if message.max_batch_size == 0:
        raise ConfigError(f"{where}dynamic_batching: needs max_batch_size > 0")
    too_big = [size for size in dynamic.preferred_batch_size if size > message.max_batch_size or size < 1]
    if too_big:
        raise ConfigError(f"{where}dynamic_batching.preferred_batch_size: {too_big} not within 1.."
                          f"{message.max_batch_size} (max_batch_size)")
    batching: dict[str, Any] = {
        "enabled": True,
        "oversize": "reject",
        "hold_when_idle": _hold_when_idle(message, where),
        "max_queue_delay_ms": dynamic.max_queue_delay_microseconds / 1000,
        "preferred_batch_sizes": list(dynamic.preferred_batch_size),
    }
    policy = dynamic.default_queue_policy
    if policy.max_queue_size > 0:
        batching["max_queue_size"] = policy.max_queue_size
    if policy.default_timeout_microseconds > 0 and policy.timeout_action == pb.ModelQueuePolicy.REJECT:
        batching["timeout_ms"] = policy.default_timeout_microseconds / 1000
    return batching


def _hold_when_idle(message: pb.ModelConfig, where: str) -> bool | str:
    if HOLD_PARAMETER not in message.parameters:
        return "adaptive"
    value = message.parameters[HOLD_PARAMETER].string_value.lower()
    if value not in ("true", "false", "adaptive"):
        raise ConfigError(f"{where}parameters {HOLD_PARAMETER}: {value!r} is not true, false or adaptive")
    return {"true": True, "false": False}.get(value, value)


def _execution(message: pb.ModelConfig, where: str) -> dict[str, Any]:
    if EXECUTION_PARAMETER not in message.parameters:
        return {}
    value = message.parameters[EXECUTION_PARAMETER].string_value
    if value not in _EXECUTIONS:
        raise ConfigError(f"{where}parameters {EXECUTION_PARAMETER}: {value!r} is not one of "
                          f"{', '.join(_EXECUTIONS)}")
    return {"execution": value}


def _version_policy(policy: pb.ModelVersionPolicy, where: str) -> dict[str, Any]:
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return {"all": True}
    if choice == "specific":
        if not policy.specific.versions:
            raise ConfigError(f"{where}version_policy.specific.versions: empty")
        return {"specific": list(policy.specific.versions)}
    return {"latest": policy.latest.num_versions or 1}


def _instances(groups: Any, where: str) -> dict[str, Any]:
    """instances and device (one device, or one per instance) of the instance groups (module docstring)."""
    if not groups:
        return {"instances": 1, "device": "auto"}
    gpu, cpu = pb.ModelInstanceGroup.KIND_GPU, pb.ModelInstanceGroup.KIND_CPU
    kinds = {group.kind for group in groups}
    if not kinds & {gpu, cpu}:
        return {"instances": sum(max(group.count, 1) * max(len(group.gpus), 1) for group in groups),
                "device": "auto"}
    undecided = "cuda" if gpu in kinds else "cpu"  # KIND_AUTO / KIND_MODEL beside explicit groups
    devices: list[str] = []
    for group in groups:
        count = max(group.count, 1)
        if group.kind == gpu and group.gpus:
            devices += [f"cuda:{index}" for index in group.gpus for _ in range(count)]
        elif group.kind in (gpu, cpu):
            devices += ["cuda" if group.kind == gpu else "cpu"] * count
        else:
            devices += [undecided] * (count * max(len(group.gpus), 1))
    return {"instances": len(devices), "device": devices[0] if len(set(devices)) == 1 else devices}
