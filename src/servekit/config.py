"""Configuration: ServerSettings (flags and SERVEKIT_* env) and ModelConfig (config.yaml).

Parsing is pure: ``parse_model_config`` takes text and a path used only in messages,
so a bad file is reported as ``path: field.path: what is wrong``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from servekit.errors import ConfigError
from servekit.types import DATATYPES, TensorSpec

__all__ = [
    "BatchingConfig",
    "ModelConfig",
    "OnnxConfig",
    "ServerSettings",
    "SimpleApiConfig",
    "TensorConfig",
    "VersionPolicy",
    "parse_model_config",
]

RuntimeName = Literal["onnx", "torchscript", "torch_export", "sklearn", "python"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorConfig(_Strict):
    name: str
    datatype: str
    shape: list[int]

    @field_validator("datatype")
    @classmethod
    def _known_datatype(cls, value: str) -> str:
        if value not in DATATYPES:
            raise ValueError(f"unknown datatype {value!r}; expected one of {', '.join(DATATYPES)}")
        return value

    @field_validator("shape")
    @classmethod
    def _valid_dims(cls, value: list[int]) -> list[int]:
        if any(dim < -1 or dim == 0 for dim in value):
            raise ValueError("dimensions must be positive, or -1 for any size")
        return value

    def spec(self) -> TensorSpec:
        return TensorSpec(self.name, self.datatype, tuple(self.shape))


class BatchingConfig(_Strict):
    """Dynamic batching. A batch is sent as soon as an instance is idle; the delay only
    applies while every instance is busy, so a lone request never waits it out."""

    enabled: bool = True
    max_queue_delay_ms: float = Field(default=2.0, ge=0)
    preferred_batch_sizes: list[int] = Field(default_factory=list)
    max_queue_size: int = Field(default=2048, ge=1, description="requests waiting, at most")
    timeout_ms: float | None = Field(default=None, gt=0, description="per-request deadline")
    oversize: Literal["split", "reject"] = "split"

    @field_validator("preferred_batch_sizes")
    @classmethod
    def _positive_sizes(cls, value: list[int]) -> list[int]:
        if any(size < 1 for size in value):
            raise ValueError("preferred batch sizes must be at least 1")
        return sorted(set(value))


class VersionPolicy(_Strict):
    """Which numbered versions to serve: exactly one of latest / all / specific."""

    latest: int | None = Field(default=None, ge=1)
    all: bool | None = None
    specific: list[int] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> VersionPolicy:
        given = [k for k in ("latest", "all", "specific") if getattr(self, k) not in (None, False)]
        if len(given) > 1:
            raise ValueError(f"give only one of latest, all, specific (got {', '.join(given)})")
        return self

    def select(self, available: list[int]) -> list[int]:
        """The versions to load out of those on disk, ascending."""
        ordered = sorted(available)
        if self.all:
            return ordered
        if self.specific is not None:
            return [v for v in ordered if v in set(self.specific)]
        return ordered[-(self.latest or 1) :]


class OnnxConfig(_Strict):
    intra_op_threads: int = Field(default=0, ge=0, description="0 lets onnxruntime choose")
    inter_op_threads: int = Field(default=0, ge=0)
    graph_optimization: Literal["disabled", "basic", "extended", "all"] = "all"
    providers: list[str] | None = None


class SimpleApiConfig(_Strict):
    """How /predict reads a model: which output holds predictions and probabilities."""

    prediction_output: str | None = None
    probability_output: str | None = None


class ModelConfig(_Strict):
    name: str | None = None
    runtime: RuntimeName | None = None
    handler: str | None = Field(default=None, description="FILE.py[:Class] in the model folder")
    inputs: list[TensorConfig] | None = None
    outputs: list[TensorConfig] | None = None
    max_batch_size: int | None = Field(default=None, ge=0, description="rows; 0 = no batching")
    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    instances: int = Field(default=1, ge=1, le=64)
    device: Literal["cpu", "cuda", "auto"] = "auto"
    version_policy: VersionPolicy = Field(default_factory=VersionPolicy)
    default_version: int | None = None
    onnx: OnnxConfig = Field(default_factory=OnnxConfig)
    simple: SimpleApiConfig = Field(default_factory=SimpleApiConfig)
    trust_pickle: bool = False
    parameters: dict[str, Any] = Field(default_factory=dict)


def parse_model_config(text: str, source: Path | str) -> ModelConfig:
    """Parse config.yaml text; ConfigError names ``source`` and the bad field."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    try:
        return ModelConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{source}: {problems}") from None


class ServerSettings(BaseSettings):
    """Server settings; every field also reads SERVEKIT_<NAME> from the environment."""

    model_config = SettingsConfigDict(env_prefix="SERVEKIT_", extra="ignore")

    repository: Path = Path("models")
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = Field(default=8001, ge=0, le=65535, description="0 = do not serve gRPC")
    metrics_port: int = 8002
    management_port: int = 8003
    workers: int = Field(default=1, ge=1)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    default_model: str | None = None
    max_request_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    grpc_max_message_bytes: int = Field(
        default=65 * 1024 * 1024, ge=1024, description="largest gRPC message either way: a 64 MiB tensor and the rest"
    )
    load_models: list[str] | None = Field(
        default=None, description="only these models at start (default: every model in the repository)"
    )
