"""model-settings.json mapped onto servekit's ModelConfig: what carries over and what is refused (no server)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from servekit.errors import ConfigError
from servekit.formats.mlserver import read_mlserver_config
from servekit.formats.mlserver.settings import parse_settings, to_model_config
from servekit.serving.entry import read_model_config
from tests.builders import write_onnx_model

SKLEARN = "mlserver_sklearn.SKLearnModel"


def _settings(**fields: Any) -> str:
    return json.dumps({"implementation": SKLEARN, **fields})


def _config(text: str, folder: str = "iris", model_file: str = "model.skops") -> Any:
    return to_model_config(parse_settings(text, "model-settings.json"), "model-settings.json", folder, ".", model_file)


def test_an_sklearn_model_maps_onto_the_sklearn_runtime_with_mlservers_output_names() -> None:
    config = _config(_settings(name="iris", parameters={"version": "v0.1.0"}, max_batch_size=8, max_batch_time=0.5,
                               inputs=[{"name": "predict", "datatype": "FP32", "shape": [-1, 4]}]))
    assert config.runtime == "sklearn"
    assert (config.version_folder, config.model_file, config.version_label) == (".", "model.skops", "v0.1.0")
    assert config.parameters == {"output_names": {"label": "predict", "probabilities": "predict_proba",
                                                  "transform": "transform"},
                                 "label_column": True, "probabilities_datatype": "FP64"}
    assert config.any_input and config.default_outputs == ["predict"]
    assert config.table_input == "on_request"  # a request saying content_type pd sends columns
    assert config.max_batch_size == 8
    assert config.batching.enabled and config.batching.max_queue_delay_ms == 500
    assert [(t.name, t.datatype, t.shape) for t in config.inputs or []] == [("predict", "FP32", [-1, 4])]


def test_extra_predict_fn_chooses_what_a_request_naming_no_outputs_gets() -> None:
    config = _config(_settings(parameters={"extra": {"predict_fn": "predict_proba"}}))
    assert config.default_outputs == ["predict_proba"]
    assert _config(_settings(parameters={"extra": {"predict_fn": "transform"}})).default_outputs == ["transform"]
    with pytest.raises(ConfigError, match=r"parameters.extra.predict_fn 'decision_function': servekit's sklearn "
                                          r"runtime answers predict, predict_proba, transform"):
        _config(_settings(parameters={"extra": {"predict_fn": "decision_function"}}))
    only_proba = _config(_settings(outputs=[{"name": "predict_proba", "datatype": "FP64", "shape": [-1, 3]}]))
    assert only_proba.default_outputs is None  # every declared output


def test_the_pandas_content_type_in_the_settings_reads_every_request_as_columns() -> None:
    assert _config(_settings(parameters={"content_type": "pd"})).table_input == "always"
    assert _config(_settings(parameters={"content_type": "np"})).table_input == "on_request"
    onnx = json.dumps({"implementation": "mlserver_onnx.OnnxModel", "parameters": {"content_type": "pd"}})
    with pytest.raises(ConfigError, match=r"parameters.content_type 'pd': only an SKLearnModel reads tables"):
        _config(onnx, model_file="model.onnx")
    assert _config(onnx.replace('"pd"', '"np"'), model_file="model.onnx").table_input == "never"


def test_without_adaptive_batching_each_request_runs_alone() -> None:
    for fields in ({}, {"max_batch_size": 0}, {"max_batch_size": 1, "max_batch_time": 1}):
        config = _config(_settings(**fields))
        assert not config.batching.enabled and config.max_batch_size is None


def test_an_onnx_model_keeps_its_graphs_names_and_the_cache_setting_carries_over() -> None:
    config = _config(json.dumps({"implementation": "mlserver_onnx.OnnxModel", "cache_enabled": True}),
                     model_file="model.onnx")
    assert config.runtime == "onnx" and config.parameters == {} and config.cache.enabled


@pytest.mark.parametrize(("implementation", "said"), [
    ("mlserver_xgboost.XGBoostModel", "an XGBoost booster"),
    ("mlserver_lightgbm.LightGBMModel", "a LightGBM booster"),
    ("mlserver_mlflow.MLflowRuntime", "an MLflow model"),
    ("mlserver_huggingface.HuggingFaceRuntime", "a Hugging Face pipeline"),
])
def test_a_runtime_servekit_cannot_map_is_refused_with_what_to_do(implementation: str, said: str) -> None:
    with pytest.raises(ConfigError, match=rf"{implementation}' \({said}\) has no servekit runtime.*Export the model "
                                          r"to ONNX and use mlserver_onnx.OnnxModel"):
        parse_settings(json.dumps({"implementation": implementation}), "model-settings.json")


def test_a_custom_mlmodel_class_is_refused_with_the_way_to_port_it() -> None:
    with pytest.raises(ConfigError, match=r"'models.MyRuntime': servekit does not run MLServer's MLModel classes.*"
                                          r"handler.py"):
        parse_settings(json.dumps({"implementation": "models.MyRuntime"}), "model-settings.json")
    with pytest.raises(ConfigError, match=r"implementation: missing; servekit maps mlserver_sklearn.SKLearnModel"):
        parse_settings("{}", "model-settings.json")


@pytest.mark.parametrize(("text", "said"), [
    ("[1]", r"expected a JSON object"),
    ("{", r"not valid JSON"),
    (_settings(parameters={"content_type": "str"}), r"parameters.content_type 'str': servekit reads a request as "
                                                    r"numpy arrays \('np'\) or as the columns of a pandas DataFrame"),
    (_settings(parameters={"environment_tarball": "env.tar.gz"}), r"parameters.environment_tarball: servekit runs"),
    (_settings(max_batch_size="8"), r"max_batch_size: unexpected value '8'"),
    (_settings(parameters={"uri": 3}), r"parameters.uri: unexpected value 3"),
])
def test_settings_servekit_cannot_honour_are_refused(text: str, said: str) -> None:
    with pytest.raises(ConfigError, match=said):
        parse_settings(text, "model-settings.json")


def test_a_pickle_loads_only_when_the_settings_trust_it() -> None:
    with pytest.raises(ConfigError, match=r'model.joblib: refusing to unpickle.*"extra": \{"trust_pickle": true\}'):
        _config(_settings(), model_file="model.joblib")
    trusted = _config(_settings(parameters={"extra": {"trust_pickle": True}}), model_file="model.joblib")
    assert trusted.trust_pickle


def test_a_name_other_than_the_folders_is_refused_with_the_fix() -> None:
    with pytest.raises(ConfigError, match=r"name 'flowers': servekit serves a model under its folder's name "
                                          r"\('iris'\); rename the folder"):
        _config(_settings(name="flowers"))


def test_unknown_fields_are_named_in_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="servekit.formats.mlserver"):
        parse_settings(_settings(shiny=1, parameters={"glitter": 2}), "model-settings.json")
    assert "skipped fields servekit does not know: shiny, parameters.glitter" in caplog.text


def _folder(tmp_path: Path, settings: dict[str, Any], files: tuple[str, ...]) -> Path:
    model_dir = tmp_path / "linear"
    for name in files:
        write_onnx_model((model_dir / name).parent).rename(model_dir / name)
    (model_dir / "model-settings.json").write_text(json.dumps(settings))
    return model_dir


def test_the_uri_is_found_as_mlserver_finds_it(tmp_path: Path) -> None:
    onnx = {"implementation": "mlserver_onnx.OnnxModel"}
    in_place = read_model_config(_folder(tmp_path / "a", onnx, ("model.onnx",)))
    assert (in_place.version_folder, in_place.model_file) == (".", "model.onnx")
    a_file = read_mlserver_config(_folder(tmp_path / "b", {**onnx, "parameters": {"uri": "./weights/net.onnx"}},
                                          ("weights/net.onnx",)))
    assert (a_file.version_folder, a_file.model_file) == ("weights", "net.onnx")
    a_folder = read_mlserver_config(_folder(tmp_path / "c", {**onnx, "parameters": {"uri": "weights"}},
                                            ("weights/model.onnx",)))
    assert (a_folder.version_folder, a_folder.model_file) == ("weights", "model.onnx")


@pytest.mark.parametrize(("uri", "said"), [
    ("s3://bucket/model.onnx", r"servekit reads models from the repository's disk"),
    ("../elsewhere/model.onnx", r"is outside the model folder"),
    ("missing.onnx", r"'missing.onnx': no such file or folder"),
    ("empty", r"no model file in .*empty \(looked for model.onnx\)"),
])
def test_a_uri_servekit_cannot_serve_is_refused(tmp_path: Path, uri: str, said: str) -> None:
    model_dir = _folder(tmp_path, {"implementation": "mlserver_onnx.OnnxModel", "parameters": {"uri": uri}},
                        ("model.onnx",))
    (model_dir / "empty").mkdir()
    with pytest.raises(ConfigError, match=said):
        read_model_config(model_dir)


def test_a_folder_with_two_configs_is_refused(tmp_path: Path) -> None:
    model_dir = _folder(tmp_path, {"implementation": "mlserver_onnx.OnnxModel"}, ("model.onnx",))
    (model_dir / "config.yaml").write_text("max_batch_size: 4\n")
    with pytest.raises(ConfigError, match=r"has config.yaml and model-settings.json: servekit reads one config"):
        read_model_config(model_dir)
