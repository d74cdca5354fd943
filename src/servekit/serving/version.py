"""One model version: its runtimes, signature and batcher, loaded from a version folder."""

from __future__ import annotations

import dataclasses
import enum
import itertools
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from servekit.batching.execution import choose_execution
from servekit.batching.queue import BatchPolicy, Hold
from servekit.batching.scheduler import Batcher
from servekit.batching.stats import ModelStats
from servekit.config import ModelConfig
from servekit.errors import ConfigError
from servekit.runtimes import RuntimeContext, Signature, create_runtime, detect_runtime
from servekit.runtimes.base import Runtime
from servekit.runtimes.python import handler_path
from servekit.types import TensorSpec, is_decimal

__all__ = ["Fingerprint", "LoadState", "ModelVersion", "load_version", "serving_fields", "version_fingerprint"]

# (path relative to the model folder, size, mtime in ns) of every file one version is loaded from.
Fingerprint = tuple[tuple[str, int, int], ...]

# batching.hold_when_idle's values (config.yaml / config.pbtxt) as the batcher's rule.
_HOLDS: dict[bool | str, Hold] = {False: "never", True: "always", "adaptive": "adaptive"}
# Config fields that only choose among loaded versions, or (ray) only matter to
# `servekit ray deploy`: changing them never reloads a version.
_ROUTING_FIELDS = frozenset({"default_version", "traffic", "version_policy", "ray"})

log = logging.getLogger("servekit.repository")

# Loads per (model, version) in this process: each load's ModelVersion.generation.
_GENERATIONS: defaultdict[tuple[str, int], itertools.count[int]] = defaultdict(lambda: itertools.count(1))


class LoadState(enum.StrEnum):
    LOADING = "LOADING"
    READY = "READY"
    UNAVAILABLE = "UNAVAILABLE"
    UNLOADING = "UNLOADING"


@dataclass(eq=False, slots=True)
class ModelVersion:
    name: str
    version: int
    config: ModelConfig
    runtime_name: str
    platform: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int
    batcher: Batcher
    device: str  # the first instance's ("cpu" or "cuda:N"); each instance's is in ``devices``
    load_seconds: float
    stats: ModelStats = field(default_factory=ModelStats)
    state: LoadState = LoadState.READY
    fingerprint: Fingerprint = ()
    # 1 for the first load of this model version in this process, 2 for the next (a reload), and
    # so on: the response cache keeps the answers of each load apart by it.
    generation: int = 1
    # What clients may call the version besides its number: the runtime's ``version_label`` (a
    # TorchServe archive's modelVersion, "1.0"), else the number itself.
    label: str = ""
    loaded_at: float = 0.0  # wall-clock time (time.time()) the load finished
    devices: tuple[str, ...] = ()  # instance i runs on devices[i] (servekit.runtimes.placement)
    # Looked up on every request: built once here, not per call.
    input_by_name: dict[str, TensorSpec] = field(init=False)
    output_by_name: dict[str, TensorSpec] = field(init=False)

    def __post_init__(self) -> None:
        self.label = self.label or str(self.version)
        self.devices = self.devices or (self.device,)
        self.input_by_name = {spec.name: spec for spec in self.inputs}
        self.output_by_name = {spec.name: spec for spec in self.outputs}


def version_fingerprint(model_dir: Path, version: int) -> Fingerprint:
    """What one version is loaded from, cheaply (stat only): the files of its version folder and
    the model folder's own files (handler, extras), but neither config.yaml (compared parsed, see
    ``serving_fields``) nor other versions' folders. Equal fingerprints: no need to reload."""
    found: list[tuple[str, int, int]] = []
    stack = [model_dir]
    while stack:
        folder = stack.pop()
        try:
            children = list(folder.iterdir())
        except OSError:
            continue
        for child in children:
            relative = child.relative_to(model_dir)
            top = relative.parts[0]
            if folder == model_dir and (child.name == "config.yaml" or (is_decimal(top) and top != str(version))):
                continue
            try:
                if child.is_dir():
                    stack.append(child)
                else:
                    info = child.stat()
                    found.append((relative.as_posix(), info.st_size, info.st_mtime_ns))
            except OSError:
                continue
    return tuple(sorted(found))


def serving_fields(config: ModelConfig) -> dict[str, Any]:
    """The part of a config that a loaded version depends on (all but the routing fields)."""
    return config.model_dump(exclude=set(_ROUTING_FIELDS))


def _choose_signature(config: ModelConfig, derived: Signature | None, where: Path) -> Signature:
    """Config wins where given; otherwise the runtime's own signature; else an error."""
    inputs = tuple(t.spec() for t in config.inputs) if config.inputs else (derived.inputs if derived else None)
    outputs = tuple(t.spec() for t in config.outputs) if config.outputs else (derived.outputs if derived else None)
    if not inputs:
        raise ConfigError(f"{where}: inputs: this runtime cannot tell its inputs; declare them in config.yaml")
    if not outputs:
        raise ConfigError(f"{where}: outputs: this runtime cannot tell its outputs; declare them in config.yaml")
    if derived and config.inputs:
        known = {spec.name for spec in derived.inputs}
        unknown = [spec.name for spec in inputs if spec.name not in known]
        if unknown:
            raise ConfigError(f"{where}: inputs: the model has no input named {', '.join(unknown)}")
    if config.any_input and len(inputs) != 1:
        raise ConfigError(f"{where}: any_input: the model has {len(inputs)} inputs; any_input needs exactly one")
    unknown = [name for name in config.default_outputs or () if name not in {spec.name for spec in outputs}]
    if unknown:
        raise ConfigError(f"{where}: default_outputs: the model has no output named {', '.join(unknown)}")
    return Signature(inputs, outputs)


def _max_batch_size(config: ModelConfig, signature: Signature, where: Path) -> int:
    """Batch only when every input has a variable first dimension."""
    batchable = all(spec.shape and spec.shape[0] == -1 for spec in signature.inputs)
    if config.max_batch_size is None:
        return 32 if batchable else 0
    if config.max_batch_size > 0 and not batchable:
        raise ConfigError(f"{where}: max_batch_size: batching needs every input's first dimension to be -1")
    return config.max_batch_size


def _new_runtime(runtime_name: str, context: RuntimeContext) -> Runtime:
    """One loaded instance of the runtime (blocking)."""
    runtime = create_runtime(runtime_name, context, isolated=context.config.isolation == "process")
    runtime.load()
    return runtime


def load_version(name: str, model_dir: Path, version: int, config: ModelConfig) -> ModelVersion:
    """Load one version (blocking: call from a worker thread). Raises with a clear reason."""
    started = time.perf_counter()
    fingerprint = version_fingerprint(model_dir, version)
    version_dir = model_dir / (config.version_folder or str(version))
    where = model_dir / "config.yaml"
    has_handler = config.handler is not None or handler_path(model_dir, None)[0].is_file()
    runtime_name = config.runtime or detect_runtime(version_dir, has_handler)
    if config.table_input != "never" and runtime_name != "sklearn":
        raise ConfigError(f"{where}: table_input: only the sklearn runtime reads tables; this model runs on "
                          f"{runtime_name}")
    context = RuntimeContext(name, version, model_dir, version_dir, config)
    runtimes: list[Runtime] = []
    try:
        for index in range(config.instances):
            runtimes.append(_new_runtime(runtime_name, dataclasses.replace(context, instance=index)))
        signature = _choose_signature(config, runtimes[0].signature(), where)
        max_batch_size = _max_batch_size(config, signature, where)
    except BaseException:
        for loaded_runtime in runtimes:  # what loaded before the failure must not stay in memory
            loaded_runtime.unload()
        raise
    batching = config.batching
    policy = BatchPolicy(
        max_rows=max_batch_size if max_batch_size > 0 and batching.enabled else None,
        max_delay_s=batching.max_queue_delay_ms / 1000,
        preferred_sizes=tuple(s for s in batching.preferred_batch_sizes if s <= max(max_batch_size, 1)),
        max_queue_size=batching.max_queue_size,
        hold=_HOLDS[batching.hold_when_idle],
    )
    if max_batch_size > 0 and not batching.enabled:
        # Requests still carry a batch dimension (their rows are counted, as Triton counts them); each runs alone.
        policy = BatchPolicy(max_rows=None, max_queue_size=batching.max_queue_size, counts_rows=True)
    stats = ModelStats()
    # A call that can be timed out must run on a thread: one on the event loop cannot be abandoned.
    # An isolated model's call waits on another process: never on the event loop either.
    on_thread = config.execution_timeout_s is not None or config.isolation == "process"
    execution = "thread" if on_thread else batching.execution
    inline = choose_execution(execution, runtime_name, runtimes, signature.inputs, f"{name}:{version}",
                              batched=max_batch_size > 0)
    if inline:
        runtimes[0].run_inline()
    batcher = Batcher(
        f"{name}:{version}",
        runtimes,
        policy,
        oversize=batching.oversize,
        timeout_s=batching.timeout_ms / 1000 if batching.timeout_ms else None,
        stats=stats,
        inline=inline,
        execution_timeout_s=config.execution_timeout_s,
        respawn=lambda hung: _new_runtime(runtime_name, hung.context),  # in its place: same instance, same device
    )
    loaded = ModelVersion(
        name=name,
        version=version,
        config=config,
        runtime_name=runtime_name,
        platform=config.platform or runtimes[0].platform,
        inputs=signature.inputs,
        outputs=signature.outputs,
        max_batch_size=max_batch_size,
        batcher=batcher,
        device=runtimes[0].device,
        devices=tuple(runtime.device for runtime in runtimes),
        load_seconds=time.perf_counter() - started,
        stats=stats,
        fingerprint=fingerprint,
        generation=next(_GENERATIONS[name, version]),
        label=runtimes[0].version_label or config.version_label or str(version),
        loaded_at=time.time(),
    )
    log.info("loaded %s version %d (%s, %s%s) in %.3f s", name, version, runtime_name, ", ".join(loaded.devices),
             ", in its own process" if config.isolation == "process" else "", loaded.load_seconds)
    return loaded
