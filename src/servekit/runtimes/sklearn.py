"""scikit-learn runtime: ``*.skops`` by default; ``*.joblib`` / ``*.pkl`` only when trusted.

The estimator reads one 2-D input (default name "input", FP32 ``[-1, n_features_in_]``)
and gives up to two outputs:

- "label": ``predict()``; INT64 for integer classes, BYTES for string classes,
  FP32/FP64 for regressors (as the estimator predicts them).
- "probabilities": ``predict_proba()`` as FP32 ``[-1, n_classes]``, for single-output
  classifiers that have it.

config.yaml may declare the input under another name, and may declare a subset of
these outputs (to drop one, or to pin a datatype the arrays are then cast to).
``parameters: {output_names: {label: ..., probabilities: ...}}`` serves the outputs under
other names (an MLServer model's ``predict`` and ``predict_proba``: servekit.formats.mlserver);
``label_column: true`` answers a one-dimensional label as a column ``[-1, 1]``, and
``probabilities_datatype: FP64`` keeps predict_proba's float64 (both as MLServer answers).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import skops.io

from servekit.errors import ConfigError, InvalidInput
from servekit.runtimes.base import Arrays, Runtime, Signature, find_file
from servekit.types import TensorSpec, numpy_dtype

__all__ = ["SklearnRuntime"]

_LABEL = "label"
_PROBABILITIES = "probabilities"


class SklearnRuntime(Runtime):
    platform = "sklearn"
    # Fitted estimators only read their state in predict / predict_proba.
    thread_safe = True

    def load(self) -> None:
        config = self.context.config
        path = find_file(self.context.version_dir, (".skops", ".joblib", ".pkl"), self.context.config.model_file)
        if path.suffix == ".skops":
            estimator = _load_skops(path, _trusted_types(config.parameters, path))
        else:
            estimator = _load_pickle(path, config.trust_pickle)
        if not callable(getattr(estimator, "predict", None)):
            raise ConfigError(f"{path}: holds a {type(estimator).__name__}, which has no predict()")
        self._estimator = estimator
        self._label_column = _flag(config.parameters, "label_column", path)
        derived = _derive_signature(estimator, _probabilities_datatype(config.parameters, path))
        if self._label_column:
            derived = _as_column(derived)
        self._signature = _renamed(derived, config.parameters, path)
        self._label_name = self._signature.outputs[0].name
        # Derived outputs: the label, then the probabilities when the estimator has predict_proba.
        methods = (estimator.predict, getattr(estimator, "predict_proba", None))
        self._methods: dict[str, Any] = {spec.name: methods[i] for i, spec in enumerate(self._signature.outputs)}
        if config.inputs:
            if len(config.inputs) != 1:
                raise ConfigError(f"{self.context.model_dir}: a sklearn model takes exactly one input")
            self._signature = Signature((config.inputs[0].spec(),), self._signature.outputs)
        if config.outputs:
            offered = {spec.name for spec in self._signature.outputs}
            unknown = [t.name for t in config.outputs if t.name not in offered]
            if unknown:
                raise ConfigError(
                    f"{self.context.model_dir}: this estimator gives only {', '.join(sorted(offered))};"
                    f" cannot serve output(s) {', '.join(unknown)}"
                )
            self._signature = Signature(self._signature.inputs, tuple(t.spec() for t in config.outputs))

    def signature(self) -> Signature:
        return self._signature

    def predict(self, inputs: Arrays) -> Arrays:
        name = self._signature.inputs[0].name
        if name not in inputs:
            raise InvalidInput(f"missing input {name!r}")
        features = inputs[name]
        if features.ndim != 2:
            raise InvalidInput(f"input {name!r} must be 2-D (rows x features), got shape {features.shape}")
        outputs: Arrays = {}
        for spec in self._signature.outputs:
            array = np.asarray(self._methods[spec.name](features))
            if self._label_column and spec.name == self._label_name and array.ndim == 1:
                array = array.reshape(-1, 1)
            outputs[spec.name] = _as_datatype(array, spec.datatype)
        return outputs

    def unload(self) -> None:
        self._estimator = None
        self._methods = {}


def _renamed(signature: Signature, parameters: dict[str, Any], path: Path) -> Signature:
    """The derived outputs under the names ``parameters.output_names`` gives them (label first, as derived)."""
    names = parameters.get("output_names", {})
    if not (isinstance(names, dict) and set(names) <= {_LABEL, _PROBABILITIES}
            and all(isinstance(name, str) and name for name in names.values())):
        raise ConfigError(f"{path}: parameters.output_names maps '{_LABEL}' and '{_PROBABILITIES}' to other names")
    return Signature(signature.inputs, tuple(TensorSpec(names.get(spec.name, spec.name), spec.datatype, spec.shape)
                                             for spec in signature.outputs))


def _flag(parameters: dict[str, Any], key: str, path: Path) -> bool:
    value = parameters.get(key, False)
    if not isinstance(value, bool):
        raise ConfigError(f"{path}: parameters.{key} must be true or false")
    return value


def _probabilities_datatype(parameters: dict[str, Any], path: Path) -> str:
    datatype = parameters.get("probabilities_datatype", "FP32")
    if datatype not in ("FP32", "FP64"):
        raise ConfigError(f"{path}: parameters.probabilities_datatype must be FP32 or FP64")
    return str(datatype)


def _as_column(signature: Signature) -> Signature:
    """The signature with a one-dimensional label ``[-1]`` as a column ``[-1, 1]``."""
    label, *others = signature.outputs
    if len(label.shape) == 1:
        label = TensorSpec(label.name, label.datatype, (-1, 1))
    return Signature(signature.inputs, (label, *others))


def _trusted_types(parameters: dict[str, Any], path: Path) -> list[str]:
    trusted = parameters.get("trusted_types", [])
    if not (isinstance(trusted, list) and all(isinstance(name, str) for name in trusted)):
        raise ConfigError(f"{path}: parameters.trusted_types must be a list of type names")
    return trusted


def _load_skops(path: Path, trusted: list[str]) -> Any:
    """Load a skops file, refusing any type skops does not trust unless the config lists it."""
    untrusted = skops.io.get_untrusted_types(file=path)
    refused = sorted(set(untrusted) - set(trusted))
    if refused:
        raise ConfigError(
            f"{path}: refusing to load types skops does not trust: {', '.join(refused)}."
            " If you trust where this file came from, list them in config.yaml under"
            " parameters: {trusted_types: [...]}"
        )
    return skops.io.load(path, trusted=untrusted)


def _load_pickle(path: Path, trust_pickle: bool) -> Any:
    if not trust_pickle:
        raise ConfigError(
            f"{path}: refusing to unpickle: loading a pickle runs whatever code the file holds."
            " Set 'trust_pickle: true' in config.yaml only for files you made or trust,"
            " or save the model with skops (.skops) instead"
        )
    import joblib  # ships with scikit-learn; reads plain pickles as well

    return joblib.load(path)


def _derive_signature(estimator: Any, probabilities_datatype: str) -> Signature:
    n_features = getattr(estimator, "n_features_in_", None)
    width = int(n_features) if isinstance(n_features, int | np.integer) else -1
    inputs = (TensorSpec("input", "FP32", (-1, width)),)
    outputs = [_label_spec(estimator, width)]
    classes = getattr(estimator, "classes_", None)
    # Multi-output classifiers keep a list of class arrays and return a list of probabilities.
    if callable(getattr(estimator, "predict_proba", None)) and isinstance(classes, np.ndarray) and classes.ndim == 1:
        outputs.append(TensorSpec(_PROBABILITIES, probabilities_datatype, (-1, len(classes))))
    return Signature(inputs, tuple(outputs))


def _label_spec(estimator: Any, width: int) -> TensorSpec:
    classes = getattr(estimator, "classes_", None)
    if isinstance(classes, np.ndarray) and classes.ndim == 1:
        return TensorSpec(_LABEL, _datatype_of(classes), (-1,))
    if width > 0:
        # A regressor says nothing of its output's dtype and width until it runs once.
        probe = np.asarray(estimator.predict(np.zeros((1, width), dtype=np.float32)))
        return TensorSpec(_LABEL, _datatype_of(probe), (-1, *probe.shape[1:]))
    return TensorSpec(_LABEL, "FP64", (-1,))


def _datatype_of(array: np.ndarray[Any, Any]) -> str:
    kind = array.dtype.kind
    if kind in ("O", "S", "U"):
        return "BYTES"
    if kind == "b":
        return "BOOL"
    if kind in ("i", "u"):
        return "INT64"
    return "FP32" if array.dtype == np.float32 else "FP64"


def _as_datatype(array: np.ndarray[Any, Any], datatype: str) -> np.ndarray[Any, Any]:
    """Cast to the signature's datatype, so what predict returns always matches signature()."""
    if datatype == "BYTES":
        flat = [x if isinstance(x, bytes) else str(x).encode() for x in array.reshape(-1)]
        return np.array(flat, dtype=object).reshape(array.shape)
    return array.astype(numpy_dtype(datatype), copy=False)
