"""SklearnRuntime: safe loading (skops trust, pickle refusal), derived signature, predict, transform, tables."""

from __future__ import annotations

import pickle
import re
import sys
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
import skops.io
from sklearn.cluster import KMeans
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.svm import SVC

from servekit.config import ModelConfig, TensorConfig
from servekit.errors import ConfigError, InvalidInput, ServekitError
from servekit.runtimes import Runtime, RuntimeContext, Signature, create_runtime
from servekit.runtimes.base import RuntimeRequest
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


def test_a_transformer_without_predict_answers_transform(tmp_path: Path) -> None:
    scaler = StandardScaler().fit(FEATURES)
    _save(scaler, tmp_path)
    runtime = _runtime(tmp_path)
    assert runtime.signature() == Signature(inputs=(TensorSpec("input", "FP32", (-1, 3)),),
                                            outputs=(TensorSpec("transform", "FP32", (-1, 3)),))
    np.testing.assert_allclose(runtime.predict({"input": FEATURES[:2]})["transform"], scaler.transform(FEATURES[:2]),
                               rtol=1e-6)


def test_transform_beside_predict_is_served_only_when_output_names_name_it(tmp_path: Path) -> None:
    clusters = KMeans(n_clusters=2, n_init=1, random_state=0).fit(FEATURES)
    _save(clusters, tmp_path)
    assert [spec.name for spec in _runtime(tmp_path).signature().outputs] == ["label"]
    runtime = _runtime(tmp_path, ModelConfig(parameters={"output_names": {"label": "predict",
                                                                          "transform": "distances"}}))
    assert [(spec.name, spec.shape) for spec in runtime.signature().outputs] == [("predict", (-1,)),
                                                                                 ("distances", (-1, 2))]
    np.testing.assert_allclose(runtime.predict({"input": FEATURES[:2]})["distances"], clusters.transform(FEATURES[:2]),
                               rtol=1e-5)


def test_an_estimator_with_neither_predict_nor_transform_or_without_its_default_output_is_refused(
        tmp_path: Path) -> None:
    _save(StandardScaler().fit(FEATURES), tmp_path)
    with pytest.raises(ConfigError, match=r"holds a StandardScaler, which answers only transform; the default output "
                                          r"label is not one of them.*parameters.extra.predict_fn"):
        _runtime(tmp_path, ModelConfig(default_outputs=["label"]))
    other = tmp_path / "other"
    _save({"weights": [1.0, 2.0]}, other)  # a dict: no estimator at all
    with pytest.raises(ConfigError, match="which has neither predict\\(\\) nor transform\\(\\)"):
        _runtime(other, ModelConfig(parameters={"trusted_types": []}))


TABLE = pd.DataFrame({"age": [22.0, 35.0, 47.0, 51.0, 62.0, 29.0], "color": ["red", "green", "blue"] * 2})
TABLE_LABELS = np.array([0, 0, 1, 1, 1, 0])


def _tabular(tmp_path: Path, table_input: str = "on_request", **fields: Any) -> tuple[Runtime, Pipeline]:
    columns = ColumnTransformer([("age", StandardScaler(), ["age"]),
                                 ("color", OneHotEncoder(sparse_output=False, handle_unknown="ignore"), ["color"])])
    pipeline = Pipeline([("columns", columns), ("classify", LogisticRegression())]).fit(TABLE, TABLE_LABELS)
    _save(pipeline, tmp_path, "model.joblib")
    return _runtime(tmp_path, ModelConfig(trust_pickle=True, table_input=table_input, **fields)), pipeline


def _columns(**overrides: Any) -> dict[str, Any]:
    columns = {"age": np.array([25.0, 50.0, 60.0]), "color": np.array([b"red", b"blue", b"green"], dtype=object)}
    return {**columns, **overrides}


def test_a_table_reaches_the_estimator_as_a_dataframe_with_strings(tmp_path: Path) -> None:
    runtime, pipeline = _tabular(tmp_path)
    assert runtime.per_request  # a table's columns are its own: never merged with another request's
    frame = pd.DataFrame({"age": [25.0, 50.0, 60.0], "color": ["red", "blue", "green"]})
    [answer] = runtime.predict_requests([RuntimeRequest(_columns(), {"content_type": "pd"})])
    assert not isinstance(answer, Exception)
    np.testing.assert_array_equal(answer["label"], pipeline.predict(frame))
    np.testing.assert_allclose(answer["probabilities"], pipeline.predict_proba(frame), rtol=1e-6)


def test_a_per_request_sklearn_runtime_computes_only_the_outputs_asked(tmp_path: Path) -> None:
    runtime, _ = _tabular(tmp_path, default_outputs=["label"])
    asked, default = runtime.predict_requests([
        RuntimeRequest(_columns(), {"content_type": "pd"}, requested_outputs=("probabilities",)),
        RuntimeRequest(_columns(), {"content_type": "pd"}),
    ])
    assert not isinstance(asked, Exception) and not isinstance(default, Exception)
    assert list(asked) == ["probabilities"] and list(default) == ["label"]


def test_a_table_the_estimator_cannot_read_fails_its_own_request_with_the_reason(tmp_path: Path) -> None:
    runtime, _ = _tabular(tmp_path)
    missing, good, strings = runtime.predict_requests([
        RuntimeRequest({"age": np.array([25.0])}, {"content_type": "pd"}),
        RuntimeRequest(_columns(), {"content_type": "pd"}),
        RuntimeRequest(_columns(age=np.array([b"a", b"b", b"c"], dtype=object)), {"content_type": "pd"}),
    ])
    assert isinstance(missing, InvalidInput) and "columns are missing: {'color'}" in missing.message
    assert isinstance(strings, InvalidInput) and "could not convert string to float: 'a'" in strings.message
    assert not isinstance(good, Exception)
    [latin1] = runtime.predict_requests([RuntimeRequest(_columns(color=np.array([b"\xe9"] * 3, dtype=object)),
                                                        {"content_type": "pd"})])
    assert isinstance(latin1, InvalidInput) and "column 'color'" in latin1.message


def test_a_request_without_the_pandas_content_type_is_a_tensor(tmp_path: Path) -> None:
    runtime, _ = _tabular(tmp_path)
    [answer] = runtime.predict_requests([RuntimeRequest({"input": FEATURES[:2, :2]})])
    assert isinstance(answer, ValueError)  # the pipeline selects columns by name: a plain array is the model's failure
    always, _ = _tabular(tmp_path / "always", table_input="always")
    [table, tensor] = always.predict_requests([RuntimeRequest(_columns()),
                                               RuntimeRequest(_columns(), {"content_type": "np"})])
    assert not isinstance(table, Exception)
    assert isinstance(tensor, InvalidInput) and "missing input 'input'" in tensor.message


def test_without_pandas_a_table_is_refused_naming_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runtime, _ = _tabular(tmp_path)
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas now raises ImportError
    [answer] = runtime.predict_requests([RuntimeRequest(_columns(), {"content_type": "pd"})])
    assert isinstance(answer, ServekitError) and not isinstance(answer, InvalidInput)
    assert "needs pandas, which is not installed here: pip install 'servekit[sklearn]'" in answer.message
    [tensor] = runtime.predict_requests([RuntimeRequest({"input": np.zeros((1, 2), dtype=np.float32)})])
    assert not isinstance(tensor, ServekitError)  # a tensor request never needs pandas


def test_tensor_requests_asking_the_same_outputs_run_as_one_batch_beside_tables(tmp_path: Path) -> None:
    estimator = LogisticRegression().fit(FEATURES, CLASSES)
    _save(estimator, tmp_path)
    runtime = _runtime(tmp_path, ModelConfig(table_input="on_request"))
    calls: list[int] = []
    predict = runtime._methods["label"]  # count the estimator's calls and the rows each gets
    runtime._methods["label"] = lambda rows: calls.append(len(rows)) or predict(rows)
    columns = {name: FEATURES[:2, i] for i, name in enumerate(("a", "b", "c"))}
    first, table, second, proba = runtime.predict_requests([
        RuntimeRequest({"input": FEATURES[:2]}, requested_outputs=("label",)),
        RuntimeRequest(columns, {"content_type": "pd"}, requested_outputs=("label",)),
        RuntimeRequest({"input": FEATURES[2:5]}, requested_outputs=("label",)),
        RuntimeRequest({"input": FEATURES[:1]}, requested_outputs=("probabilities",)),
    ])
    assert sorted(calls) == [2, 5]  # the table alone; both label tensors in one call of 2 + 3 rows
    assert not isinstance(first, Exception) and not isinstance(second, Exception)
    np.testing.assert_array_equal(first["label"], estimator.predict(FEATURES[:2]))
    np.testing.assert_array_equal(second["label"], estimator.predict(FEATURES[2:5]))
    assert not isinstance(table, Exception) and table["label"].shape == (2,)
    assert not isinstance(proba, Exception) and list(proba) == ["probabilities"]
