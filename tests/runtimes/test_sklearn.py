"""SklearnRuntime: safe loading (skops trust, pickle refusal), derived signature, predict."""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import skops.io
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.svm import SVC

from servekit.config import ModelConfig, TensorConfig
from servekit.errors import ConfigError, InvalidInput
from servekit.runtimes import Runtime, RuntimeContext, Signature, create_runtime
from servekit.types import TensorSpec

FEATURES = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 1.0]] * 5, dtype=np.float32)
CLASSES = np.array([0, 1, 2, 1] * 5)
ADAM = "sklearn.neural_network._stochastic_optimizers.AdamOptimizer"


def _save(estimator: Any, model_dir: Path, file_name: str = "model.skops") -> None:
    version_dir = model_dir / "1"
    version_dir.mkdir(parents=True)
    path = version_dir / file_name
    if file_name.endswith(".skops"):
        skops.io.dump(estimator, path)
    elif file_name.endswith(".joblib"):
        joblib.dump(estimator, path)
    else:
        path.write_bytes(pickle.dumps(estimator))


def _runtime(model_dir: Path, config: ModelConfig | None = None) -> Runtime:
    context = RuntimeContext("m", 1, model_dir, model_dir / "1", config=config or ModelConfig())
    runtime = create_runtime("sklearn", context)
    runtime.load()
    return runtime


def test_classifier_signature_and_predict(tmp_path: Path) -> None:
    estimator = LogisticRegression().fit(FEATURES, CLASSES)
    _save(estimator, tmp_path)
    runtime = _runtime(tmp_path)
    assert runtime.signature() == Signature(
        inputs=(TensorSpec("input", "FP32", (-1, 3)),),
        outputs=(TensorSpec("label", "INT64", (-1,)), TensorSpec("probabilities", "FP32", (-1, 3))),
    )
    outputs = runtime.predict({"input": FEATURES[:4]})
    assert outputs["label"].dtype == np.int64 and outputs["label"].shape == (4,)
    assert outputs["probabilities"].dtype == np.float32 and outputs["probabilities"].shape == (4, 3)
    np.testing.assert_array_equal(outputs["label"], estimator.predict(FEATURES[:4]))
    np.testing.assert_allclose(outputs["probabilities"], estimator.predict_proba(FEATURES[:4]), rtol=1e-6)


def test_labels_as_a_column_and_float64_probabilities_when_the_parameters_ask(tmp_path: Path) -> None:
    estimator = LogisticRegression().fit(FEATURES, CLASSES)
    _save(estimator, tmp_path)
    runtime = _runtime(tmp_path, ModelConfig(parameters={"label_column": True, "probabilities_datatype": "FP64"}))
    assert [spec.shape for spec in runtime.signature().outputs] == [(-1, 1), (-1, 3)]
    outputs = runtime.predict({"input": FEATURES[:4]})
    np.testing.assert_array_equal(outputs["label"], estimator.predict(FEATURES[:4]).reshape(-1, 1))
    assert outputs["probabilities"].dtype == np.float64
    np.testing.assert_array_equal(outputs["probabilities"], estimator.predict_proba(FEATURES[:4]))
    for parameters, said in (({"label_column": "yes"}, "label_column must be true or false"),
                             ({"probabilities_datatype": "FP16"}, "probabilities_datatype must be FP32 or FP64")):
        with pytest.raises(ConfigError, match=said):
            _runtime(tmp_path, ModelConfig(parameters=parameters))


def test_string_classes_come_back_as_bytes_and_no_proba_without_predict_proba(tmp_path: Path) -> None:
    names = np.array(["zero", "one", "two"])[CLASSES]
    _save(SVC().fit(FEATURES, names), tmp_path)  # SVC has predict_proba only with probability=True
    runtime = _runtime(tmp_path)
    signature = runtime.signature()
    assert signature is not None
    assert signature.outputs == (TensorSpec("label", "BYTES", (-1,)),)
    label = runtime.predict({"input": FEATURES[:3]})["label"]
    assert label.dtype == object
    assert list(label) == [b"zero", b"one", b"two"]


@pytest.mark.parametrize(("targets", "shape"), [(np.arange(20.0), (-1,)), (np.ones((20, 2)), (-1, 2))])
def test_regressor_label_dtype_and_width_are_probed(tmp_path: Path, targets: Any, shape: tuple[int, ...]) -> None:
    _save(LinearRegression().fit(FEATURES.astype(np.float64), targets), tmp_path)
    runtime = _runtime(tmp_path)
    signature = runtime.signature()
    assert signature is not None
    assert signature.outputs == (TensorSpec("label", "FP64", shape),)
    label = runtime.predict({"input": FEATURES[:2]})["label"]
    assert label.dtype == np.float64
    assert label.shape == (2, *shape[1:])


def test_config_renames_the_input_and_picks_and_types_outputs(tmp_path: Path) -> None:
    _save(LogisticRegression().fit(FEATURES, CLASSES), tmp_path)
    config = ModelConfig(
        inputs=[TensorConfig(name="features", datatype="FP32", shape=[-1, 3])],
        outputs=[TensorConfig(name="label", datatype="INT32", shape=[-1])],
    )
    runtime = _runtime(tmp_path, config)
    outputs = runtime.predict({"features": FEATURES[:2]})
    assert list(outputs) == ["label"]
    assert outputs["label"].dtype == np.int32
    with pytest.raises(InvalidInput, match="missing input 'features'"):
        runtime.predict({"input": FEATURES[:2]})
    with pytest.raises(InvalidInput, match="must be 2-D"):
        runtime.predict({"features": FEATURES[0]})


def test_config_cannot_ask_for_outputs_the_estimator_lacks(tmp_path: Path) -> None:
    _save(LinearRegression().fit(FEATURES, np.arange(20.0)), tmp_path)
    config = ModelConfig(outputs=[TensorConfig(name="probabilities", datatype="FP32", shape=[-1, 3])])
    with pytest.raises(ConfigError, match="cannot serve output"):
        _runtime(tmp_path, config)


@pytest.mark.parametrize("file_name", ["model.joblib", "model.pkl"])
def test_pickle_is_refused_without_trust_pickle(tmp_path: Path, file_name: str) -> None:
    _save(LogisticRegression().fit(FEATURES, CLASSES), tmp_path, file_name)
    with pytest.raises(ConfigError, match="trust_pickle: true") as refused:
        _runtime(tmp_path)
    assert "runs whatever code" in str(refused.value)


@pytest.mark.parametrize("file_name", ["model.joblib", "model.pkl"])
def test_pickle_loads_with_trust_pickle(tmp_path: Path, file_name: str) -> None:
    _save(LogisticRegression().fit(FEATURES, CLASSES), tmp_path, file_name)
    runtime = _runtime(tmp_path, ModelConfig(trust_pickle=True))
    assert runtime.predict({"input": FEATURES[:4]})["label"].tolist() == [0, 1, 2, 1]


def _mlp_with_optimizer() -> MLPClassifier:
    # A fitted MLP keeps its Adam optimizer, a type skops does not trust by default.
    mlp = MLPClassifier(hidden_layer_sizes=(4,), max_iter=5, random_state=0)
    with pytest.warns(Warning):  # ConvergenceWarning: five iterations are on purpose
        return mlp.fit(FEATURES, CLASSES)


def test_untrusted_skops_types_are_refused_by_name(tmp_path: Path) -> None:
    _save(_mlp_with_optimizer(), tmp_path)
    with pytest.raises(ConfigError, match=re.escape(ADAM)):
        _runtime(tmp_path)


def test_untrusted_skops_types_load_once_listed_in_trusted_types(tmp_path: Path) -> None:
    _save(_mlp_with_optimizer(), tmp_path)
    trusted = [ADAM]
    runtime = _runtime(tmp_path, ModelConfig(parameters={"trusted_types": trusted}))
    assert runtime.predict({"input": FEATURES[:2]})["probabilities"].shape == (2, 3)


def test_trusted_types_must_be_a_list_of_names(tmp_path: Path) -> None:
    _save(LogisticRegression().fit(FEATURES, CLASSES), tmp_path)
    with pytest.raises(ConfigError, match="trusted_types must be a list"):
        _runtime(tmp_path, ModelConfig(parameters={"trusted_types": "everything"}))
