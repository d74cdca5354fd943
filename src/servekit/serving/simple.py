"""The simple API over the data plane: /predict, /health and ``modelserving.ModelService``.

Rows (2-D) go to a single-input model, named or the server's default one; the answer is
read as predictions and probabilities by the model's ``simple:`` config, else by datatype
(``read_prediction``). Probabilities are always a distribution per row: a model that outputs
logits gets a softmax (``simple.probabilities``: auto, softmax or identity). Each call is
recorded once, under its transport's protocol, like an inference request of the data plane it
runs through.

``health`` is the FastAPI pattern's contract: ``{"status": "healthy", "model_loaded": true,
"device": "cpu"}`` when the default model answers and the server is ready, else
``"unhealthy"`` (``model_loaded`` false when the model is not loaded, ``device`` "none").
"""

from __future__ import annotations

import time
from typing import Any, Literal

import numpy as np

from servekit.errors import InvalidInput, ModelNotFound, ServekitError
from servekit.observability.metrics import Protocol
from servekit.observability.requests import RequestObservation
from servekit.serving.dataplane import DataPlane
from servekit.serving.version import ModelVersion
from servekit.types import Arrays, InferenceRequest, RequestedOutput, SimplePrediction, Tensor

__all__ = ["SimpleAPI", "as_distribution", "read_prediction"]

# How far a row's sum may be from 1 and still count as a distribution (float32 softmax outputs
# of wide models are off by a few 1e-7; rounded outputs by more).
_SUM_TOLERANCE = 1e-3


class SimpleAPI:
    """The simple API of one server: ``default_model`` None serves the only model there is."""

    def __init__(self, plane: DataPlane, default_model: str | None = None) -> None:
        self._plane = plane
        self._default_model = default_model

    def default_model(self) -> str:
        """The model the simple API serves: the configured one, else the only one."""
        if self._default_model is not None:
            return self._default_model
        names = self._plane.model_names()
        if len(names) == 1:
            return names[0]
        raise ModelNotFound(
            "the simple API needs a default model: this server has "
            f"{len(names)} models ({', '.join(names)}); start it with --default-model NAME"
        )

    def health(self) -> dict[str, Any]:
        """``{"status", "model_loaded", "device"}`` of the default model (see the module docstring)."""
        try:
            version = self._plane.route(self.default_model())
        except ServekitError:
            return {"status": "unhealthy", "model_loaded": False, "device": "none"}
        return {"status": "healthy" if self._plane.ready() else "unhealthy", "model_loaded": True,
                "device": version.device}

    def row_width(self, model: str | None) -> tuple[str, int]:
        """The model (``model``, else the default one) and its row width: the last dimension of
        its input (-1: any)."""
        chosen = model or self.default_model()
        inputs = self._plane.model_inputs(chosen)
        return chosen, inputs[0].shape[-1] if inputs and inputs[0].shape else -1

    def rejections(self, protocol: Protocol, model: str | None = None) -> RequestObservation:
        """The data plane's ``rejections`` for a simple-API request (``model`` None: the default model)."""
        if model is None:
            try:
                model = self.default_model()
            except ServekitError:
                model = ""
        return self._plane.rejections(protocol, model)

    async def predict(self, rows: np.ndarray[Any, Any], return_probabilities: bool,
                      model: str | None = None, protocol: Protocol = "internal") -> SimplePrediction:
        """Run rows (2-D) through a single-input model and read predictions and probabilities."""
        with self._plane.observe(protocol, model or "") as seen:
            if not model:
                seen.model = model = self.default_model()
            return await self._predict(rows, return_probabilities, model, seen)

    async def _predict(self, rows: np.ndarray[Any, Any], return_probabilities: bool, model: str,
                       seen: RequestObservation) -> SimplePrediction:
        started = time.perf_counter()
        version = self._plane.route(model)
        seen.resolved(version.name, str(version.version))
        if len(version.inputs) != 1:
            raise InvalidInput(f"the simple API needs a model with one input; {version.name!r} has "
                               f"{len(version.inputs)}")
        spec = version.inputs[0]
        data = rows.astype(np.float64) if spec.datatype == "FP64" else rows
        tensor = Tensor(spec.name, "FP64" if spec.datatype == "FP64" else "FP32", tuple(data.shape), data)
        # A model whose default_outputs leave out the probabilities /predict reads (an MLServer SKLearnModel)
        # is asked for every output by name; any other answers every output unasked.
        everything = [RequestedOutput(o.name) for o in version.outputs] if version.config.default_outputs else None
        request = InferenceRequest(version.name, [tensor], model_version=str(version.version), outputs=everything)
        response = await self._plane.answer(version, request, seen)
        outputs = {t.name: t.data for t in response.outputs}
        predictions, probabilities = read_prediction(version, outputs, return_probabilities)
        return SimplePrediction(
            predictions=predictions,
            probabilities=probabilities if return_probabilities else None,
            latency_ms=(time.perf_counter() - started) * 1000,
        )


def read_prediction(version: ModelVersion, outputs: Arrays,
                    probabilities_wanted: bool = True) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any] | None]:
    """Pick predictions and probabilities by config, else by datatype: integer/BYTES -> labels,
    a 2-D float output -> probabilities (argmax gives predictions when no label output).
    Without ``probabilities_wanted`` they are worked out only when the predictions need them
    (no label output), and may come back None."""
    simple = version.config.simple
    specs = version.outputs
    label = simple.prediction_output or next(
        (s.name for s in specs if s.datatype.startswith(("INT", "UINT")) or s.datatype == "BYTES"), None)
    proba = simple.probability_output or next(
        (s.name for s in specs if s.datatype.startswith("FP") and len(s.shape) == 2), None)
    needed = proba is not None and (probabilities_wanted or not label)
    probabilities = as_distribution(outputs[proba], simple.probabilities) if proba and needed else None
    if label:
        predictions = outputs[label]
    elif probabilities is not None:
        predictions = np.argmax(probabilities, axis=1)
    else:
        predictions = outputs[specs[0].name]
    return predictions, probabilities


def as_distribution(values: np.ndarray[Any, Any],
                    mode: Literal["auto", "softmax", "identity"]) -> np.ndarray[Any, Any]:
    """Rows of ``values`` (2-D) as probability distributions: ``softmax`` of them, ``identity``
    (as they are), or ``auto``: as they are when every row is already non-negative and sums to 1,
    else their softmax. Floating dtypes are kept; anything else becomes FP32."""
    if mode == "identity" or values.size == 0:
        return values
    rows = values if values.dtype.kind == "f" else values.astype(np.float32)
    if mode == "auto" and bool((rows >= 0).all()) and bool(
            (np.abs(rows.sum(axis=-1) - 1.0) <= _SUM_TOLERANCE).all()):
        return rows
    shifted = np.exp(rows - rows.max(axis=-1, keepdims=True))
    distribution: np.ndarray[Any, Any] = shifted / shifted.sum(axis=-1, keepdims=True)
    return distribution
