"""The MLServer repository both servers were asked about: made in code, the same each time.

``digits``: a LogisticRegression fitted on scikit-learn's ``load_digits`` (64 pixel features,
ten classes), saved with joblib, ``model-settings.json`` as an MLServer user writes it (plus
servekit's ``trust_pickle``, which MLServer ignores), named version ``v1``. ``declared``: the
same estimator with its tensors declared in the settings.

The tabular models read named columns (MLServer's ``pd`` content type): ``tabular``, a Pipeline
of a ColumnTransformer (``age`` scaled, ``color`` one-hot encoded) and a LogisticRegression,
fitted on a small generated DataFrame; ``tabular_pd``, the same with ``parameters.content_type:
pd`` in its settings (every request read as columns); ``columns``, the pipeline's fitted
ColumnTransformer alone (a transformer: no ``predict``), ``predict_fn: transform``; ``scaler``,
a StandardScaler fitted on the digits (numpy in), ``predict_fn: transform`` too.

Only numpy, pandas, scikit-learn and joblib are imported, so that the recorder runs in MLServer's
own environment too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

__all__ = ["ANSWERS", "MODELS", "ROWS", "TABLE", "build", "classifier", "tabular"]

ANSWERS = Path(__file__).parent / "mlserver_answers.json"
# Three rows of load_digits, as FP32: what every inference request sends.
ROWS = (0, 1, 17)
MODELS: dict[str, dict[str, Any]] = {
    "digits": {
        "name": "digits",
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib", "version": "v1", "extra": {"trust_pickle": True}},
    },
    "declared": {
        "name": "declared",
        "implementation": "mlserver_sklearn.SKLearnModel",
        "inputs": [{"name": "pixels", "datatype": "FP32", "shape": [-1, 64]}],
        "outputs": [{"name": "predict", "datatype": "INT64", "shape": [-1]},
                    {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 10]}],
        "parameters": {"uri": "./model.joblib", "extra": {"trust_pickle": True}},
    },
    "tabular": {
        "name": "tabular",
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib", "extra": {"trust_pickle": True}},
    },
    "tabular_pd": {
        "name": "tabular_pd",
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib", "content_type": "pd", "extra": {"trust_pickle": True}},
    },
    "columns": {
        "name": "columns",
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib", "extra": {"trust_pickle": True, "predict_fn": "transform"}},
    },
    "scaler": {
        "name": "scaler",
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib", "extra": {"trust_pickle": True, "predict_fn": "transform"}},
    },
}
# The tabular training data: an age, a color, and whether the row is "yes" (1) or not (0).
TABLE = {
    "age": [22.0, 35.0, 47.0, 51.0, 62.0, 29.0, 41.0, 58.0, 33.0, 45.0, 26.0, 54.0],
    "color": ["red", "green", "blue", "red", "green", "blue", "red", "green", "blue", "red", "green", "blue"],
    "label": [0, 0, 1, 1, 1, 0, 1, 1, 0, 1, 0, 1],
}


def classifier() -> LogisticRegression:
    """The fitted estimator (deterministic: lbfgs on the whole data set)."""
    digits = load_digits()
    return LogisticRegression(max_iter=2000).fit(digits.data / 16.0, digits.target)


def tabular() -> Pipeline:
    """The fitted tabular pipeline: ``age`` scaled, ``color`` one-hot (dense), a LogisticRegression."""
    frame = pd.DataFrame(TABLE)
    columns = ColumnTransformer([("age", StandardScaler(), ["age"]),
                                 ("color", OneHotEncoder(sparse_output=False, handle_unknown="ignore"), ["color"])])
    return Pipeline([("columns", columns), ("classify", LogisticRegression())]).fit(frame[["age", "color"]],
                                                                                 frame["label"])


def rows() -> np.ndarray[Any, Any]:
    """The request rows, scaled as the estimator was trained."""
    return (load_digits().data[list(ROWS)] / 16.0).astype(np.float32)


def build(root: Path, settings: dict[str, Any] | None = None) -> Path:
    """Write the repository under ``root`` (and ``settings`` as its settings.json when given)."""
    digits, pipeline = classifier(), tabular()
    estimators = {"digits": digits, "declared": digits, "tabular": pipeline, "tabular_pd": pipeline,
                  "columns": pipeline.named_steps["columns"],
                  "scaler": StandardScaler().fit(load_digits().data / 16.0)}
    for name, model_settings in MODELS.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model-settings.json").write_text(json.dumps(model_settings, indent=2) + "\n")
        joblib.dump(estimators[name], folder / "model.joblib")
    if settings is not None:
        (root / "settings.json").write_text(json.dumps(settings, indent=2) + "\n")
    return root
