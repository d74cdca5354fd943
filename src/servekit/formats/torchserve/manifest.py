"""A TorchServe archive's MANIFEST.json and model_config.yaml, and the ModelConfig they map to
(pure: text in, values out; ``source`` is used only in messages).

MANIFEST.json, as ``torch-model-archiver`` 0.12 writes it::

    {"createdOn": "...", "runtime": "python", "archiverVersion": "0.12.0",
     "model": {"modelName": "m", "handler": "handler.py", "serializedFile": "m.pt",
               "modelFile": "model.py", "modelVersion": "1.0", "configFile": "model_config.yaml",
               "requirementsFile": "requirements.txt"}}

model_config.yaml keys servekit maps (TorchServe's defaults when absent), every other key is
left for the handler, which reads the whole file as ``context.model_yaml_config``:

    batchSize        1      -> max_batch_size (requests per batch: one request is one row)
    maxBatchDelay    100 ms -> batching.max_queue_delay_ms
    responseTimeout  120 s  -> execution_timeout_s
    minWorkers       1      -> instances (maxWorkers is kept, not used: servekit does not autoscale)
    deviceType       (any)  -> device: cpu -> cpu, gpu -> cuda, absent -> auto
    deviceIds               -> the gpu_id handlers see (the first one)

Two differences a user may notice: TorchServe's maxBatchDelay is how long a batch waits to
fill, servekit's delay applies only while every instance is busy (an idle model starts a
lone request at once); and past responseTimeout TorchServe kills the worker and answers 500
"Worker died.", while servekit answers the batch's requests 504 (DEADLINE_EXCEEDED) and
loads a fresh instance in place of the stuck one (``execution_timeout_s``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from servekit.config import BatchingConfig, ModelConfig
from servekit.errors import ConfigError

__all__ = ["MANIFEST_PATH", "MarManifest", "YamlSettings", "parse_manifest", "parse_model_yaml", "to_model_config"]

MANIFEST_PATH = "MAR-INF/MANIFEST.json"
RUNTIME: Literal["torchserve"] = "torchserve"
_RUNTIMES = ("python", "python3")  # the manifest's runtime values a handler in Python has
_DEVICES = {"cpu": "cpu", "gpu": "cuda"}
_MAX_INSTANCES = 64


@dataclass(frozen=True, slots=True)
class MarManifest:
    """The fields of MANIFEST.json servekit uses; ``raw`` is the whole document (handlers see it)."""

    model_name: str
    handler: str
    model_version: str
    serialized_file: str | None
    model_file: str | None
    config_file: str | None
    requirements_file: str | None
    runtime: str
    archiver_version: str | None
    raw: dict[str, Any]

    def archive_files(self) -> list[str]:
        """The files the manifest names that must be in the archive (handler: when it is a file)."""
        named = [self.serialized_file, self.model_file, self.config_file, self.requirements_file]
        module = self.handler.partition(":")[0]
        if module.endswith(".py"):
            named.append(module)
        return [name for name in named if name]


def _text(section: dict[str, Any], key: str, where: str) -> str | None:
    value = section.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{where}: model.{key} must be a string, not {type(value).__name__}")
    return value


def _required(section: dict[str, Any], key: str, where: str) -> str:
    value = _text(section, key, where)
    if value is None:
        raise ConfigError(f"{where}: model.{key} is missing")
    return value


def _relative_file(section: dict[str, Any], key: str, where: str) -> str | None:
    """A file the manifest names is a plain relative path inside the archive."""
    value = _text(section, key, where)
    if value is None:
        return None
    parts = value.split("/")
    if value.startswith("/") or "\\" in value or any(part in ("", ".", "..") for part in parts):
        raise ConfigError(f"{where}: model.{key} {value!r} is not a path inside the archive")
    return value


def parse_manifest(text: str | bytes, source: Path | str = MANIFEST_PATH) -> MarManifest:
    """Parse MANIFEST.json; ConfigError names ``source`` and the field that is wrong."""
    try:
        raw = json.loads(text)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{source}: not valid JSON: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("model"), dict):
        raise ConfigError(f"{source}: expected an object with a 'model' object; is it a TorchServe archive?")
    model: dict[str, Any] = raw["model"]
    runtime = raw.get("runtime", "python")
    if runtime not in _RUNTIMES:
        raise ConfigError(f"{source}: runtime {runtime!r}: servekit runs TorchServe handlers in Python only")
    where = str(source)
    return MarManifest(
        model_name=_required(model, "modelName", where),
        handler=_required(model, "handler", where),
        model_version=str(model.get("modelVersion", "1.0")),
        serialized_file=_relative_file(model, "serializedFile", where),
        model_file=_relative_file(model, "modelFile", where),
        config_file=_relative_file(model, "configFile", where),
        requirements_file=_relative_file(model, "requirementsFile", where),
        runtime=runtime,
        archiver_version=raw.get("archiverVersion") if isinstance(raw.get("archiverVersion"), str) else None,
        raw=raw,
    )


class YamlSettings(BaseModel):
    """The model_config.yaml keys that set up serving (see the module docstring)."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    batch_size: int = Field(default=1, ge=1, alias="batchSize")
    max_batch_delay_ms: float = Field(default=100, ge=0, alias="maxBatchDelay")
    response_timeout_s: float = Field(default=120, gt=0, alias="responseTimeout")
    min_workers: int = Field(default=1, ge=0, alias="minWorkers")
    max_workers: int | None = Field(default=None, ge=0, alias="maxWorkers")
    device_type: str | None = Field(default=None, alias="deviceType")
    device_ids: list[int] | None = Field(default=None, alias="deviceIds")


def parse_model_yaml(text: str | bytes, source: Path | str) -> tuple[dict[str, Any], YamlSettings]:
    """The whole file (what handlers read) and its serving keys, checked."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    try:
        settings = YamlSettings.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{source}: {problems}") from None
    if settings.device_type is not None and settings.device_type not in _DEVICES:
        raise ConfigError(f"{source}: deviceType {settings.device_type!r}: servekit serves cpu or gpu")
    return raw, settings


def to_model_config(manifest: MarManifest, settings: YamlSettings, *, name: str | None = None,
                    batch_size: int | None = None, max_batch_delay_ms: float | None = None,
                    response_timeout_s: float | None = None, initial_workers: int | None = None) -> ModelConfig:
    """servekit's ModelConfig for the archive (see the module docstring).

    The keyword values are a registration's (``POST /models?batch_size=&max_batch_delay=&
    response_timeout=&initial_workers=``), with TorchServe 0.12's precedence as recorded:
    batch_size and max_batch_delay win over model_config.yaml, responseTimeout in the yaml wins
    over response_timeout, and initial_workers sets the instances.
    """
    batch = batch_size if batch_size is not None else settings.batch_size
    delay = max_batch_delay_ms if max_batch_delay_ms is not None else settings.max_batch_delay_ms
    timeout = settings.response_timeout_s if "response_timeout_s" in settings.model_fields_set else (
        response_timeout_s if response_timeout_s is not None else settings.response_timeout_s)
    workers = initial_workers if initial_workers is not None else settings.min_workers
    device = _DEVICES.get(settings.device_type or "", "auto")
    return ModelConfig(
        name=name or manifest.model_name,
        runtime=RUNTIME,
        max_batch_size=batch,
        # thread: a handler is arbitrary Python (it may block); never run it on the event loop.
        batching=BatchingConfig(max_queue_delay_ms=delay, execution="thread"),
        execution_timeout_s=timeout,
        instances=min(max(workers, 1), _MAX_INSTANCES),
        device=device,
    )
