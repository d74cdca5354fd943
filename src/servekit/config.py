"""Configuration: ServerSettings (flags and SERVEKIT_* env) and ModelConfig (config.yaml).

Parsing is pure: ``parse_model_config`` takes text and a path used only in messages,
so a bad file is reported as ``path: field.path: what is wrong``.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from servekit.errors import ConfigError
from servekit.observability.triton_summaries import SummaryConfig, parse_metrics_config
from servekit.types import DATATYPES, TensorSpec

__all__ = [
    "BatchingConfig",
    "CacheConfig",
    "DeviceSetting",
    "ModelConfig",
    "ONE_DEVICE",
    "OnnxConfig",
    "RayConfig",
    "ServerSettings",
    "SimpleApiConfig",
    "TensorConfig",
    "VersionPolicy",
    "check_device",
    "environment_variable",
    "parse_model_config",
]

log = logging.getLogger("servekit")

RuntimeName = Literal["onnx", "torchscript", "torch_export", "torch_pickle", "sklearn", "python", "torchserve",
                      "triton_python"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# A model's device: auto, cpu, cuda, cuda:N, or a list of cpu / cuda / cuda:N (servekit.runtimes.placement).
DeviceSetting = str | list[str]
ONE_DEVICE = re.compile(r"cpu|cuda(?::(0|[1-9][0-9]*))?")


def check_device(value: DeviceSetting) -> DeviceSetting:
    """A model's ``device`` setting, lower-cased and stripped, or ValueError saying what is accepted
    (what each value means: servekit.runtimes.placement)."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text != "auto" and not ONE_DEVICE.fullmatch(text):
            raise ValueError(f"device {value!r}: expected auto, cpu, cuda, cuda:N or a list of cpu / cuda:N")
        return text
    if not value:
        raise ValueError("device: the list needs at least one device (e.g. [cuda:0, cuda:1])")
    entries = [entry.strip().lower() for entry in value]
    for raw, entry in zip(value, entries, strict=True):
        if not ONE_DEVICE.fullmatch(entry):
            raise ValueError(f"device list entry {raw!r}: expected cpu, cuda or cuda:N")
    return entries


class TensorConfig(_Strict):
    name: str = Field(description="the tensor's name, as requests and answers name it")
    datatype: str = Field(description="an Open Inference Protocol datatype: BOOL, UINT8..UINT64, INT8..INT64, "
                          "FP16, FP32, FP64, BYTES")
    shape: list[int] = Field(description="the full shape; -1 = any size; the first dim is the batch dim when "
                             "batching")
    optional: bool = Field(default=False, description="inputs only: a request may leave it out")

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
    applies while every instance is busy, so a lone request never waits it out (unless
    ``hold_when_idle``: Triton's dynamic batcher, which config.pbtxt models get)."""

    enabled: bool = Field(default=True, description="false: each request runs as a batch of its own")
    max_queue_delay_ms: float = Field(default=2.0, ge=0, description="how long a request may wait for "
                                      "companions while the model is busy")
    preferred_batch_sizes: list[int] = Field(default_factory=list, description="batch sizes (rows) to form "
                                             "when that many are waiting, below max_batch_size")
    hold_when_idle: bool | Literal["adaptive"] = Field(
        default=False, description="true: a batch waits up to max_queue_delay_ms for max_batch_size (or a preferred "
        "size) even when an instance is idle, as Triton's dynamic batcher does (fuller batches under load; a lone "
        "request waits the delay); adaptive: it waits only for as many requests as were recently outstanding at "
        "once (fuller batches under load, a lone client waits nothing); false: an idle instance takes what is "
        "queued at once")
    max_queue_size: int = Field(default=2048, ge=1, description="requests waiting, at most")
    timeout_ms: float | None = Field(default=None, gt=0, description="per-request deadline")
    oversize: Literal["split", "reject"] = Field(default="split", description="a request with more rows than "
                                                 "max_batch_size: split across batches, or reject with 400")
    execution: Literal["auto", "thread", "inline"] = Field(
        default="auto",
        description="where batches run: an instance thread, inline on the event loop (one instance; for "
        "models computing in microseconds), or auto: inline when a one-row probe at load is that fast "
        "(see servekit.batching.execution)",
    )

    @field_validator("preferred_batch_sizes")
    @classmethod
    def _positive_sizes(cls, value: list[int]) -> list[int]:
        if any(size < 1 for size in value):
            raise ValueError("preferred batch sizes must be at least 1")
        return sorted(set(value))


class VersionPolicy(_Strict):
    """Which numbered versions to serve: exactly one of latest / all / specific."""

    latest: int | None = Field(default=None, ge=1, description="serve the N highest versions (the default: 1)")
    all: bool | None = Field(default=None, description="true: serve every version")
    specific: list[int] | None = Field(default=None, description="serve these version numbers")

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
    intra_op_threads: int = Field(
        default=0, ge=0,
        description="0 lets onnxruntime choose (one per core), except for a model that runs inline on the"
                    " event loop (batching.execution, auto for fast models): there 0 means 1",
    )
    inter_op_threads: int = Field(default=0, ge=0, description="0 lets onnxruntime choose")
    graph_optimization: Literal["disabled", "basic", "extended", "all"] = Field(
        default="all", description="onnxruntime's graph optimization level")
    providers: list[str] | None = Field(default=None, description="onnxruntime execution providers, in order "
                                        "(default: CUDA then CPU on a GPU, else CPU)")


class SimpleApiConfig(_Strict):
    """How /predict reads a model: which output holds predictions and probabilities, and how
    probabilities are made a distribution per row."""

    prediction_output: str | None = Field(default=None, description="the output /predict answers as "
                                          "predictions (default: the first integer or BYTES output)")
    probability_output: str | None = Field(default=None, description="the output /predict answers as "
                                           "probabilities (default: the first 2-D float output)")
    probabilities: Literal["auto", "softmax", "identity"] = Field(
        default="auto", description="softmax: the output holds logits; identity: send it as it is; auto: softmax "
        "unless every row is already non-negative and sums to 1",
    )


class CacheConfig(_Strict):
    """The response cache, opt-in per model: only for models whose outputs depend on their inputs alone."""

    enabled: bool = Field(default=False, description="cache this model's answers")
    ttl_s: float | None = Field(default=3600.0, gt=0, description="seconds an answer stays cached; null = no "
                                "expiry (memory: until evicted)")


class RayConfig(_Strict):
    """How ``servekit ray deploy`` places the model on a Ray cluster. Replicas are Ray actors,
    each with its own copy of the model; ``instances`` stay threads inside each replica."""

    num_replicas: int | Literal["auto"] = Field(default=1, description="replicas, or auto: Ray Serve "
                                                "autoscaling between min_replicas and max_replicas")
    min_replicas: int | None = Field(default=None, ge=0, description="num_replicas auto: the fewest replicas")
    max_replicas: int | None = Field(default=None, ge=1, description="num_replicas auto: the most replicas")
    target_ongoing_requests: float | None = Field(default=None, gt=0, description="requests per replica the "
                                                  "autoscaler aims at")
    num_cpus: float | None = Field(default=None, ge=0, description="CPUs reserved per replica (Ray's default: 1)")

    @model_validator(mode="after")
    def _coherent_scaling(self) -> RayConfig:
        if isinstance(self.num_replicas, int) and self.num_replicas < 1:
            raise ValueError("num_replicas is at least 1, or auto")
        autoscaling = ("min_replicas", "max_replicas", "target_ongoing_requests")
        given = [key for key in autoscaling if getattr(self, key) is not None]
        if given and self.num_replicas != "auto":
            raise ValueError(f"{', '.join(given)} only apply with num_replicas: auto")
        if self.min_replicas is not None and self.max_replicas is not None and self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas {self.min_replicas} is above max_replicas {self.max_replicas}")
        return self

    def deployment_options(self) -> dict[str, Any]:
        """Keyword arguments of Ray Serve's ``Deployment.options`` (pure: no Ray import)."""
        options: dict[str, Any] = {"num_replicas": self.num_replicas}
        if self.num_replicas == "auto":
            autoscaling = {key: getattr(self, key) for key in ("min_replicas", "max_replicas",
                                                               "target_ongoing_requests")}
            options["autoscaling_config"] = {key: value for key, value in autoscaling.items() if value is not None}
        if self.num_cpus is not None:
            options["ray_actor_options"] = {"num_cpus": self.num_cpus}
        return options


class ModelConfig(_Strict):
    name: str | None = Field(default=None, description="the model's name in an archive of its folder "
                             "(servekit archive; default: the folder's name)")
    runtime: RuntimeName | None = Field(default=None, description="what runs the model (default: told by the "
                                        "version's files)")
    platform: str | None = Field(default=None, description="the framework name model metadata reports "
                                 "(default: the runtime's own, e.g. onnxruntime_onnx)")
    model_file: str | None = Field(default=None, description="the file each version folder is loaded from "
                                   "(default: the one file with the runtime's suffix)")
    handler: str | None = Field(default=None, description="FILE.py[:Class] in the model folder")
    inputs: list[TensorConfig] | None = Field(default=None, description="the input tensors (default: what the "
                                              "model file tells, for ONNX and torch.export)")
    outputs: list[TensorConfig] | None = Field(default=None, description="the output tensors (default: what the "
                                               "model file tells)")
    any_input: bool = Field(default=False, description="a model with one input takes a request's only input "
                            "whatever its name, and in any numeric datatype (cast to the declared one), as "
                            "MLServer's SKLearnModel does")
    table_input: Literal["never", "on_request", "always"] = Field(
        default="never", description="a request may send named columns of one table, one input per column "
        "(MLServer's pandas codec): on_request, when its parameters say content_type pd; always, unless they say "
        "np; never: inputs are tensors. Only the sklearn runtime reads tables (pandas must be installed)",
    )
    default_outputs: list[str] | None = Field(default=None, description="the outputs a request that names none "
                                              "gets (default: every output)")
    max_batch_size: int | None = Field(default=None, ge=0, description="rows; 0 = no batching")
    batching: BatchingConfig = Field(default_factory=BatchingConfig, description="dynamic batching")
    instances: int = Field(default=1, ge=1, le=64, description="parallel copies of the model, each on its own "
                           "thread (or process, with isolation: process)")
    execution_timeout_s: float | None = Field(
        default=None, gt=0, description="longest one model call may run: past it the call's requests fail with "
        "504 and its instance is replaced (the model then runs on instance threads, never inline)",
    )
    isolation: Literal["none", "process"] = Field(
        default="none", description="process: each instance runs in a process of its own (a crash fails only its "
        "batch and the process restarts; a GIL-bound model scales with instances); see servekit.runtimes.isolated",
    )
    device: DeviceSetting = Field(default="auto", description="auto, cpu, cuda, cuda:N, or a list such as "
                                  "[cuda:0, cuda:1] that the instances take round-robin (servekit.runtimes.placement)")
    version_policy: VersionPolicy = Field(default_factory=VersionPolicy, description="which versions to serve")
    version_folder: str | None = Field(
        default=None, description="a model without numbered version folders (MLServer's layout): the folder, "
        "relative to the model folder ('.' for itself), whose files are its only version, 1",
    )
    version_label: str | None = Field(default=None, description="what clients may also call version 1 of a "
                                      "model with a version_folder (MLServer's parameters.version)")
    default_version: int | None = Field(default=None, description="the version of requests that name none "
                                        "(default: the highest loaded version)")
    traffic: dict[int, int] | None = Field(
        default=None, description="weight per version for requests that name none, e.g. {1: 90, 2: 10}"
    )
    onnx: OnnxConfig = Field(default_factory=OnnxConfig, description="ONNX Runtime's session options")
    simple: SimpleApiConfig = Field(default_factory=SimpleApiConfig, description="how /predict reads the model")
    cache: CacheConfig = Field(default_factory=CacheConfig, description="the response cache")
    ray: RayConfig = Field(default_factory=RayConfig, description="servekit ray deploy: replicas and CPUs")
    trust_pickle: bool = Field(default=False, description="load .joblib/.pkl scikit-learn files (pickles run "
                               "code when loaded: only files you trust)")
    parameters: dict[str, Any] = Field(default_factory=dict, description="passed to a handler as "
                                       "context.parameters")

    @model_validator(mode="after")
    def _inline_runs_one_instance(self) -> ModelConfig:
        if self.batching.execution == "inline" and self.instances > 1:
            raise ValueError("batching.execution inline runs one instance on the event loop; "
                             f"instances is {self.instances} (use thread or auto)")
        if self.batching.execution == "inline" and self.execution_timeout_s is not None:
            raise ValueError("batching.execution inline cannot be timed out (a call on the event loop cannot be "
                             "abandoned); use thread or auto with execution_timeout_s")
        if self.batching.execution == "inline" and self.isolation == "process":
            raise ValueError("batching.execution inline runs the model on the event loop; with isolation process "
                             "it runs in another process (use thread or auto)")
        return self

    @field_validator("version_folder")
    @classmethod
    def _inside_the_model_folder(cls, value: str | None) -> str | None:
        if value is not None and (PurePosixPath(value).is_absolute() or ".." in PurePosixPath(value).parts
                                  or "\\" in value):
            raise ValueError("a relative path inside the model folder ('.' for the folder itself), without '..'")
        return value

    @field_validator("device")
    @classmethod
    def _valid_device(cls, value: DeviceSetting) -> DeviceSetting:
        return check_device(value)

    @field_validator("traffic")
    @classmethod
    def _valid_split(cls, value: dict[int, int] | None) -> dict[int, int] | None:
        if value is None:
            return None
        if any(version < 1 for version in value) or any(weight < 0 for weight in value.values()):
            raise ValueError("versions are numbers from 1 and weights are 0 or more")
        if value and not any(value.values()):
            raise ValueError("at least one version needs a weight above 0")
        return value or None


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


# Settings whose flag is not the field's name read the flag's variable; the old one (SERVEKIT_<FIELD>)
# is still read, with a warning.
_RENAMED = {"allowed_urls": "SERVEKIT_ALLOWED_URL", "read_timeout_s": "SERVEKIT_READ_TIMEOUT",
            "drain_timeout_s": "SERVEKIT_DRAIN_TIMEOUT", "drain_idle_grace_s": "SERVEKIT_DRAIN_IDLE_GRACE"}
# Lists: a JSON list, or comma-separated (the flags are repeatable and comma-separated as well).
_LISTS = frozenset({"allowed_urls", "load_models", "models", "triton_metrics_config"})


def environment_variable(field: str) -> str:
    """The SERVEKIT_* variable of a ServerSettings field: the one its flag is named after."""
    return _RENAMED.get(field, f"SERVEKIT_{field.upper()}")


def old_environment_variable(field: str) -> str | None:
    """The variable the field was read from before it was renamed after its flag, or None."""
    return f"SERVEKIT_{field.upper()}" if field in _RENAMED else None


def environment_source(field: str, environ: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """(variable, text) the field is read from in ``environ`` (default: os.environ), or None. The
    variable named after the flag wins; the old name is read with a warning."""
    environ = os.environ if environ is None else environ
    variable = environment_variable(field)
    old = old_environment_variable(field)
    if variable in environ:
        if old is not None and old in environ:
            log.warning("servekit: %s is ignored: %s is set (the old name of the same setting)", old, variable)
        return variable, environ[variable]
    if old is not None and old in environ:
        log.warning("servekit: %s is the old name of %s; it still works, but rename it", old, variable)
        return old, environ[old]
    return None


def _decoded(field: str, text: str) -> Any:
    if field not in _LISTS:
        return text
    if text.lstrip().startswith("["):
        return json.loads(text)
    return [part.strip() for part in text.split(",") if part.strip()]


class _Environment(PydanticBaseSettingsSource):
    """The SERVEKIT_* variables, each named after its flag (``environment_variable``)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        found = environment_source(field_name)
        return (None, field_name, False) if found is None else (_decoded(field_name, found[1]), found[0], False)

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            value, _, _ = self.get_field_value(field, name)
            if value is not None:
                values[name] = value
        return values


class ServerSettings(BaseSettings):
    """Server settings; every field also reads a SERVEKIT_* variable (``environment_variable``:
    SERVEKIT_<FLAG>, e.g. SERVEKIT_HTTP_PORT, SERVEKIT_ALLOWED_URL)."""

    model_config = SettingsConfigDict(env_prefix="SERVEKIT_", extra="ignore")

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments first, then the environment by servekit's own names (no .env, no secrets folder)."""
        return init_settings, _Environment(settings_cls)

    repository: Path = Field(default=Path("models"), description="the model repository (servekit serve's "
                             "argument)")
    host: str = Field(default="127.0.0.1", description="address of the HTTP, gRPC and metrics ports")
    http_port: int = Field(default=8000, description="HTTP port")
    grpc_port: int = Field(default=8001, ge=0, le=65535, description="0 = do not serve gRPC")
    metrics_port: int = Field(default=8002, ge=0, le=65535, description="0 = do not serve metrics")
    triton_metrics: bool = Field(default=False, description="also write Triton's per-model metrics "
                                 "(nv_inference_*, labels model and version) on the metrics page, so Triton "
                                 "dashboards and alerts keep working")
    triton_metrics_config: list[str] = Field(
        default_factory=list, description="Triton's --metrics-config settings for the Triton metrics, KEY=VALUE: "
        "summary_latencies=true adds the latency summaries (nv_inference_*_summary_us, quantiles over the last "
        "minute), summary_quantiles=Q:ERROR,... chooses their quantiles")
    management_port: int = Field(default=8003, ge=0, le=65535, description="0 = no management API")
    management_host: str = Field(default="127.0.0.1", description="the management API's address (loopback only "
                                 "by default, whatever --host says)")
    management_token: str | None = Field(default=None, repr=False, description="bearer token of the management "
                                         "API (default: a fresh one per start, written to a file only the owner "
                                         "can read)")
    management_auth: bool = Field(default=True, description="False serves the management API without a token")
    repository_control: Literal["token", "open", "off"] = Field(
        default="token", description="who may load and unload models through the OIP repository extension: "
        "holders of the management token, anyone (open: a trusted network), or nobody (off)",
    )
    model_store: Path | None = Field(default=None, description="where archives are read from and registered "
                                     "models are unpacked (default: the repository)")
    allowed_urls: list[str] = Field(default_factory=list, description="archive URLs the management API may "
                                    "fetch: http(s) or file:// prefixes or globs (default: none, local only); "
                                    "comma-separated in SERVEKIT_ALLOWED_URL")
    max_archive_bytes: int = Field(default=4 * 1024**3, ge=1024, description="largest archive, packed or unpacked")
    max_archive_files: int = Field(default=10_000, ge=1, description="most files in one archive")
    poll_interval: float | None = Field(default=None, ge=0, description="seconds between repository rescans "
                                        "that load and unload what changed on disk (0 or none = off)")
    workers: int = Field(default=1, ge=1, description="worker processes sharing the ports")
    log_level: Literal["debug", "info", "warning", "error"] = Field(default="info", description="of the "
                                                                    "server's log (stderr)")
    default_model: str | None = Field(default=None, description="model of the simple API (/predict) when there "
                                      "are several")
    max_request_bytes: int = Field(default=64 * 1024 * 1024, ge=1024, description="largest request body accepted")
    max_json_elements: int = Field(
        default=4_000_000, ge=1, description="most values a JSON request body may hold (each costs a Python "
        "object while it is decoded); larger tensors go in the binary tensor extension or gRPC",
    )
    read_timeout_s: float = Field(default=30.0, ge=0, description="seconds a request may take to arrive whole "
                                  "(line, headers and body) before it gets 408; 0 = no limit")
    max_connections: int | None = Field(default=2048, ge=1, description="open HTTP connections and requests in "
                                        "flight per worker; past it new requests get 503 (none = no limit)")
    drain_timeout_s: float = Field(default=30.0, ge=0, description="after SIGTERM, seconds for requests and calls "
                                   "in flight (HTTP and gRPC together) to finish before what is left is closed")
    drain_idle_grace_s: float = Field(default=2.0, ge=0, description="after SIGTERM, seconds an idle HTTP "
                                      "connection stays open for a request already on its way (it is answered "
                                      "with Connection: close); 0 closes idle connections at once")
    grpc_frontend: Literal["auto", "native", "grpcio"] = Field(
        default="auto", description="what serves the gRPC port: native (HTTP/2 by nghttp2 in a C extension built "
        "at install from libnghttp2's headers: several times grpcio's calls per second), grpcio, or auto (native "
        "where the extension is installed, else grpcio)")
    grpc_max_message_bytes: int = Field(
        default=65 * 1024 * 1024, ge=1024, description="largest gRPC message either way: a 64 MiB tensor and the rest"
    )
    load_models: list[str] | None = Field(
        default=None, description="only these models at start (default: every model in the repository)"
    )
    models: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="archives to register at start, as TorchServe's --models: NAME=ARCHIVE, "
        "ARCHIVE (named by its manifest) or all (every TorchServe archive in the model store); comma-separated "
        "in SERVEKIT_MODELS",
    )
    log_format: Literal["text", "json"] = Field(
        default="text", description="servekit's, uvicorn's and grpc's log records: text lines, or one JSON "
        "object per line (default: json when access_log is json)")
    access_log: Literal["text", "json", "off"] = Field(
        default="text", description="one line per inference request (default: as log_format)")
    otel_endpoint: str | None = Field(
        default=None, description="send OpenTelemetry traces over OTLP/HTTP to this URL (http://HOST:4318, or the "
        "full traces URL); default: off unless OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT is set")
    tls_cert: Path | None = Field(default=None, description="PEM certificate (chain) served on every port: HTTP, "
                                  "gRPC, metrics and management (with tls_key)")
    tls_key: Path | None = Field(default=None, description="PEM private key of tls_cert")
    tls_ca: Path | None = Field(default=None, description="PEM CA bundle: every port then asks clients for a "
                                "certificate it signed (mutual TLS)")
    docs_site_url: str | None = Field(default=None, description="the documentation site the status page (GET /) "
                                      "links to: an http(s) URL, or a path on this server (default: no link)")
    cache_url: str = Field(default="memory://", description="memory:// (per process) or redis://host:port/db")
    cache_max_bytes: int = Field(default=128 * 1024 * 1024, ge=0, description="memory cache bound, per process")
    cache_namespace: str | None = Field(
        default=None, description="prefix of every cache key; `serve` sets a fresh one per start, shared by its "
        "workers, so a restart never reads answers computed from older model files"
    )

    @field_validator("models", "allowed_urls", mode="before")
    @classmethod
    def _split_lists(cls, value: Any) -> Any:
        """``m1=a.mar,m2=b.mar`` (TorchServe's form, also in SERVEKIT_MODELS), each item split too;
        the same for --allowed-url (repeatable, each comma-separated, as SERVEKIT_ALLOWED_URL)."""
        if isinstance(value, str):
            value = json.loads(value) if value.startswith("[") else [value]
        if isinstance(value, list | tuple):
            return [part.strip() for item in value for part in str(item).split(",") if part.strip()]
        return value

    @field_validator("triton_metrics_config")
    @classmethod
    def _triton_metrics_config(cls, value: list[str]) -> list[str]:
        parse_metrics_config(value)  # a ValueError naming the bad item
        return value

    @model_validator(mode="after")
    def _triton_metrics_config_needs_the_flag(self) -> ServerSettings:
        if self.triton_metrics_config and not self.triton_metrics:
            raise ValueError("--triton-metrics-config (SERVEKIT_TRITON_METRICS_CONFIG) needs --triton-metrics")
        return self

    @property
    def triton_summaries(self) -> SummaryConfig:
        """What ``triton_metrics_config`` asks of Triton's latency summaries."""
        return parse_metrics_config(self.triton_metrics_config)

    @field_validator("cache_url")
    @classmethod
    def _known_cache_scheme(cls, value: str) -> str:
        scheme = value.partition("://")[0]
        if scheme not in ("memory", "redis", "rediss", "unix") or "://" not in value:
            raise ValueError(f"cache URL {value!r}: expected memory://, redis://HOST:PORT/DB, rediss:// or unix://")
        return value

    @field_validator("docs_site_url")
    @classmethod
    def _link_url(cls, value: str | None) -> str | None:
        """Only a web link: the status page puts it in an href, where a javascript: URL would run."""
        if value is not None and not value.startswith(("http://", "https://", "/")):
            raise ValueError(f"docs site URL {value!r}: expected http://..., https://... or a /path")
        return value

    @field_validator("otel_endpoint")
    @classmethod
    def _http_endpoint(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"otel_endpoint {value!r}: expected an http:// or https:// URL (OTLP/HTTP), "
                             "e.g. http://127.0.0.1:4318")
        return value

    @model_validator(mode="after")
    def _one_log_format(self) -> ServerSettings:
        """Unless given, the log format follows a JSON access log, and the access log the log format."""
        given = self.model_fields_set
        if "log_format" not in given and self.access_log == "json":
            self.log_format = "json"
        if "access_log" not in given:
            self.access_log = self.log_format
        return self

    @model_validator(mode="after")
    def _tls_files_together(self) -> ServerSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: give both, or neither")
        if self.tls_ca is not None and self.tls_cert is None:
            raise ValueError("tls_ca (mutual TLS) needs tls_cert and tls_key")
        for name in ("tls_cert", "tls_key", "tls_ca"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{name}: {path} is not a readable file")
        return self

    @property
    def scheme(self) -> str:
        """``https`` when the ports serve TLS, else ``http``."""
        return "https" if self.tls_cert is not None else "http"

    @property
    def store(self) -> Path:
        """The model store: where archives are read from and registered models are unpacked."""
        return self.model_store if self.model_store is not None else self.repository

    @property
    def management_enabled(self) -> bool:
        """The management API runs only with one worker: each worker has its own models, and a
        change made in one process would silently not reach the others."""
        return self.management_port != 0 and self.workers == 1
