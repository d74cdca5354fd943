"""The model code every peer's handler runs: numpy, onnxruntime and scikit-learn only.

Copied next to each peer's handler (peers import it as a plain module, with no servekit
installed), so that every server wraps the same computation with the same settings:

    model = Model("/path/to/workload")         # the folder workloads.py wrote
    outputs = model.predict({"input__0": batch})   # dict of name -> array, batch first

onnxruntime gets the same session options as servekit's default (threads left to
onnxruntime); scikit-learn models are loaded with joblib and asked ``predict_proba``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


class Model:
    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        meta = json.loads((self.folder / "workload.json").read_text())
        self.kind = meta["kind"]
        self.inputs = [(spec["name"], np.dtype(spec["numpy_dtype"])) for spec in meta["inputs"]]
        self.outputs = [spec["name"] for spec in meta["outputs"]]
        path = self.folder / meta["model_file"]
        if self.kind == "onnx":
            import onnxruntime as ort

            self._session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        elif self.kind == "sklearn":
            import joblib

            self._estimator = joblib.load(path)
        else:
            raise ValueError(f"unknown workload kind {self.kind!r}")

    @property
    def input_names(self) -> list[str]:
        return [name for name, _ in self.inputs]

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs by name for ``inputs`` by name; every array has the batch dimension first."""
        feeds = {name: np.asarray(inputs[name], dtype=dtype) for name, dtype in self.inputs}
        if self.kind == "onnx":
            return dict(zip(self.outputs, self._session.run(self.outputs, feeds), strict=True))
        (name, _), = self.inputs
        probabilities = self._estimator.predict_proba(feeds[name]).astype(np.float32)
        return {self.outputs[0]: probabilities}
