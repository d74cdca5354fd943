"""An MLServer model-settings.json turned into servekit's own ModelConfig (pure: JSON in, ModelConfig out).

Every decision about MLServer's settings is made here, at the edge; nothing past the returned
ModelConfig knows the model came from an MLServer repository. Errors are ConfigError
``<file>: <field>: what is wrong``; fields servekit does not read are logged as a warning.

What maps to what:

- ``implementation``: ``mlserver_sklearn.SKLearnModel`` -> runtime ``sklearn``, answering as
  MLServer 1.7's SKLearnModel does: outputs named ``predict``, ``predict_proba`` and ``transform``,
  ``predict`` a column ``[N, 1]``, ``predict_proba`` FP64, only ``predict`` (or
  ``parameters.extra.predict_fn``) for a request that names no outputs, the request's one input
  taken whatever its name and numeric datatype (``any_input``), and a request whose parameters say
  ``content_type: pd`` read as named columns of one table (MLServer's pandas codec: ``table_input``
  ``on_request``; ``always`` when the settings' ``parameters.content_type`` is ``pd``).
  ``mlserver_onnx.OnnxModel`` -> ``onnx`` (the graph's own names; MLServer itself has no ONNX
  runtime: servekit accepts the name). Any other implementation
  (XGBoost, LightGBM, MLflow, Hugging Face, Alibi, CatBoost, MLlib, or a custom ``MLModel``
  class) is refused with what to do instead: servekit does not run MLServer's ``MLModel`` API.
- ``name``: must be the model folder's name (servekit serves a model under its folder's name).
- ``parameters.uri``: the model file, or the folder holding it, relative to the folder of
  model-settings.json (default: that folder; in a folder, MLServer's well-known file names are
  looked for). It becomes the model's only version, 1 (``version_folder`` and ``model_file``).
- ``parameters.version``: what clients may also call that version (``version_label``).
- ``max_batch_size`` above 1: dynamic batching of up to that many rows, waiting at most
  ``max_batch_time`` seconds for a batch to fill while every instance is busy; 0 or 1 (MLServer's
  default, adaptive batching off): each request runs on its own.
- ``inputs`` / ``outputs`` metadata: the model's declared tensors; ``cache_enabled``: the response cache.
- joblib and pickle files run code when loaded: an sklearn model in one loads only with
  ``parameters.extra.trust_pickle: true`` (MLServer has no such switch; servekit asks for one).
- refused with a reason: a remote ``uri`` (s3://, gs://, ...), a ``uri`` outside the model
  folder, ``parameters.environment_path`` / ``environment_tarball`` (servekit runs models in
  its own environment), ``parameters.content_type`` other than ``np`` and ``pd`` (the codecs
  servekit reads), or ``pd`` for a model that is not an SKLearnModel.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Final

from pydantic import ValidationError

from servekit.config import ModelConfig
from servekit.errors import ConfigError

__all__ = ["MAPPED", "WELL_KNOWN_FILES", "MLServerSettings", "parse_settings", "to_model_config"]

log = logging.getLogger("servekit.formats.mlserver")

# implementation -> servekit runtime
MAPPED: Final = {"mlserver_sklearn.SKLearnModel": "sklearn", "mlserver_onnx.OnnxModel": "onnx"}
# What MLServer's runtimes look for in a uri that is a folder (skops: servekit's safe format, beside them).
WELL_KNOWN_FILES: Final = {"sklearn": ("model.joblib", "model.pickle", "model.pkl", "model.skops"),
                           "onnx": ("model.onnx",)}
_PICKLES: Final = (".joblib", ".pickle", ".pkl")
_UNMAPPED: Final = {
    "mlserver_xgboost": "an XGBoost booster",
    "mlserver_lightgbm": "a LightGBM booster",
    "mlserver_catboost": "a CatBoost model",
    "mlserver_mlflow": "an MLflow model",
    "mlserver_huggingface": "a Hugging Face pipeline",
    "mlserver_alibi_explain": "an Alibi explainer",
    "mlserver_alibi_detect": "an Alibi Detect detector",
    "mlserver_mllib": "a Spark MLlib model",
}
_FIELDS: Final = {"name", "implementation", "parameters", "max_batch_size", "max_batch_time", "inputs", "outputs",
                  "cache_enabled", "platform", "versions", "warm_workers", "parallel_workers"}
_PARAMETERS: Final = {"uri", "version", "extra", "format", "content_type", "environment_path",
                      "environment_tarball", "inference_pool_gid", "autogenerate_inference_pool_gid"}
_SKLEARN_OUTPUTS: Final = {"label": "predict", "probabilities": "predict_proba", "transform": "transform"}
# parameters.content_type -> how the model reads a request (ModelConfig.table_input)
_TABLE_INPUT: Final = {None: "on_request", "np": "on_request", "pd": "always"}


@dataclass(frozen=True, slots=True)
class MLServerSettings:
    """The fields of model-settings.json that servekit reads, checked."""

    name: str | None
    runtime: str
    uri: str | None
    version: str | None
    max_batch_size: int
    max_batch_time: float
    inputs: list[dict[str, Any]] | None
    outputs: list[dict[str, Any]] | None
    cache_enabled: bool
    trust_pickle: bool
    predict_fn: str | None
    table_input: str


def parse_settings(text: str, source: str) -> MLServerSettings:
    """model-settings.json text, checked; ConfigError for what servekit cannot serve."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source}: not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a JSON object")
    parameters = raw.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ConfigError(f"{source}: parameters: expected an object")
    unknown = sorted(set(raw) - _FIELDS) + [f"parameters.{key}" for key in sorted(set(parameters) - _PARAMETERS)]
    if unknown:
        log.warning("%s: skipped fields servekit does not know: %s", source, ", ".join(unknown))
    for key in ("environment_path", "environment_tarball"):
        if parameters.get(key):
            raise ConfigError(f"{source}: parameters.{key}: servekit runs every model in its own Python "
                              "environment; install the model's packages there and drop this field")
    content_type = parameters.get("content_type")
    if content_type not in _TABLE_INPUT:
        raise ConfigError(f"{source}: parameters.content_type {content_type!r}: servekit reads a request as numpy "
                          "arrays ('np') or as the columns of a pandas DataFrame ('pd'), not other codecs")
    extra = parameters.get("extra") or {}
    if not isinstance(extra, dict):
        raise ConfigError(f"{source}: parameters.extra: expected an object")
    predict_fn = extra.get("predict_fn")
    if predict_fn not in (None, *_SKLEARN_OUTPUTS.values()):
        raise ConfigError(f"{source}: parameters.extra.predict_fn {predict_fn!r}: servekit's sklearn runtime "
                          f"answers {', '.join(_SKLEARN_OUTPUTS.values())}")
    return MLServerSettings(
        name=_optional(raw, "name", str, source),
        runtime=_runtime(raw.get("implementation"), source),
        uri=_optional(parameters, "uri", str, source, "parameters."),
        version=None if parameters.get("version") is None else str(parameters["version"]),
        max_batch_size=_optional(raw, "max_batch_size", int, source) or 0,
        max_batch_time=float(_optional(raw, "max_batch_time", (int, float), source) or 0.0),
        inputs=_tensors(raw, "inputs", source),
        outputs=_tensors(raw, "outputs", source),
        cache_enabled=bool(_optional(raw, "cache_enabled", bool, source)),
        trust_pickle=extra.get("trust_pickle") is True,
        predict_fn=predict_fn,
        table_input=_TABLE_INPUT[content_type],
    )


def to_model_config(settings: MLServerSettings, source: str, folder_name: str, version_folder: str,
                    model_file: str) -> ModelConfig:
    """servekit's config for the model whose file is ``version_folder``/``model_file`` (relative to the
    model folder, as ``servekit.formats.mlserver.repository`` found it)."""
    if settings.name not in (None, "", folder_name):
        raise ConfigError(f"{source}: name {settings.name!r}: servekit serves a model under its folder's name "
                          f"({folder_name!r}); rename the folder to {settings.name!r} or drop the name")
    trusted = settings.trust_pickle
    if settings.runtime == "sklearn" and model_file.endswith(_PICKLES) and not trusted:
        raise ConfigError(
            f"{source}: {model_file}: refusing to unpickle: loading a joblib or pickle file runs whatever code it "
            'holds. If you made this file or trust where it came from, add "extra": {"trust_pickle": true} under '
            '"parameters" in model-settings.json; or save the estimator with skops as model.skops'
        )
    fields: dict[str, Any] = {
        "runtime": settings.runtime,
        "model_file": model_file,
        "version_folder": version_folder,
        "version_label": settings.version,
        "trust_pickle": trusted,
        "cache": {"enabled": settings.cache_enabled},
    }
    if settings.runtime == "sklearn":
        fields["parameters"] = {"output_names": dict(_SKLEARN_OUTPUTS), "label_column": True,
                                "probabilities_datatype": "FP64"}
        fields["any_input"] = True
        fields["table_input"] = settings.table_input
        default = settings.predict_fn or _SKLEARN_OUTPUTS["label"]
        if not settings.outputs or default in {tensor.get("name") for tensor in settings.outputs}:
            fields["default_outputs"] = [default]
    elif settings.table_input == "always":
        raise ConfigError(f"{source}: parameters.content_type 'pd': only an SKLearnModel reads tables in servekit")
    if settings.max_batch_size > 1:
        fields["max_batch_size"] = settings.max_batch_size
        fields["batching"] = {"max_queue_delay_ms": settings.max_batch_time * 1000}
    else:  # MLServer's adaptive batching is off: each request runs on its own
        fields["batching"] = {"enabled": False}
    if settings.inputs:
        fields["inputs"] = settings.inputs
    if settings.outputs:
        fields["outputs"] = settings.outputs
    try:
        return ModelConfig.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
        raise ConfigError(f"{source}: {problems}") from None


def _runtime(implementation: object, source: str) -> str:
    if not isinstance(implementation, str) or not implementation:
        raise ConfigError(f"{source}: implementation: missing; servekit maps {_mapped()}")
    runtime = MAPPED.get(implementation)
    if runtime is not None:
        return runtime
    package = implementation.partition(".")[0]
    what = _UNMAPPED.get(package)
    if what is not None:
        raise ConfigError(
            f"{source}: implementation {implementation!r} ({what}) has no servekit runtime; servekit maps "
            f"{_mapped()}. Export the model to ONNX and use mlserver_onnx.OnnxModel, or serve it with a "
            "servekit config.yaml and a handler.py"
        )
    raise ConfigError(
        f"{source}: implementation {implementation!r}: servekit does not run MLServer's MLModel classes; it maps "
        f"{_mapped()}. Port the class's load/predict to a servekit handler.py (see docs/model-repository.md, "
        "Custom handlers)"
    )


def _mapped() -> str:
    return ", ".join(f"{name} ({runtime})" for name, runtime in MAPPED.items())


def _optional(raw: dict[str, Any], key: str, kind: type | tuple[type, ...], source: str, prefix: str = "") -> Any:
    value = raw.get(key)
    if value is not None and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
        raise ConfigError(f"{source}: {prefix}{key}: unexpected value {value!r}")
    return value


def _tensors(raw: dict[str, Any], key: str, source: str) -> list[dict[str, Any]] | None:
    """MLServer's tensor metadata (name, datatype, shape; its parameters are not read)."""
    tensors = raw.get(key)
    if not tensors:
        return None
    if not isinstance(tensors, list) or not all(isinstance(t, dict) for t in tensors):
        raise ConfigError(f"{source}: {key}: expected a list of objects")
    return [{field: tensor.get(field) for field in ("name", "datatype", "shape")} for tensor in tensors]
