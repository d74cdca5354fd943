"""The MLServer repository both servers were asked about: made in code, the same each time.

``digits``: a LogisticRegression fitted on scikit-learn's ``load_digits`` (64 pixel features,
ten classes), saved with joblib, ``model-settings.json`` as an MLServer user writes it (plus
servekit's ``trust_pickle``, which MLServer ignores), named version ``v1``. ``declared``: the
same estimator with its tensors declared in the settings. Only numpy, scikit-learn and joblib
are imported, so that the recorder runs in MLServer's own environment too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

__all__ = ["ANSWERS", "MODELS", "ROWS", "build", "classifier"]

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
}


def classifier() -> LogisticRegression:
    """The fitted estimator (deterministic: lbfgs on the whole data set)."""
    digits = load_digits()
    return LogisticRegression(max_iter=2000).fit(digits.data / 16.0, digits.target)


def rows() -> np.ndarray[Any, Any]:
    """The request rows, scaled as the estimator was trained."""
    return (load_digits().data[list(ROWS)] / 16.0).astype(np.float32)


def build(root: Path, settings: dict[str, Any] | None = None) -> Path:
    """Write the repository under ``root`` (and ``settings`` as its settings.json when given)."""
    estimator = classifier()
    for name, model_settings in MODELS.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model-settings.json").write_text(json.dumps(model_settings, indent=2) + "\n")
        joblib.dump(estimator, folder / "model.joblib")
    if settings is not None:
        (root / "settings.json").write_text(json.dumps(settings, indent=2) + "\n")
    return root
