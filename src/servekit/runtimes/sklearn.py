"""scikit-learn runtime: ``*.skops`` by default; ``*.joblib`` / ``*.pkl`` only when trusted.

The estimator reads one 2-D input (default name "input", FP32 ``[-1, n_features_in_]``)
and gives up to three outputs:

- "label": ``predict()``; INT64 for integer classes, BYTES for string classes,
  FP32/FP64 for regressors (as the estimator predicts them).
- "probabilities": ``predict_proba()`` as FP32 ``[-1, n_classes]``, for single-output
  classifiers that have it.
- "transform": ``transform()`` ``[-1, n_features_out]``, for an estimator that has it and
  either has no ``predict()`` (a scaler, a ColumnTransformer) or is asked for it by
  ``output_names`` (its datatype as a probe of zeros gives it, else FP64).

config.yaml may declare the input under another name, and may declare a subset of
these outputs (to drop one, or to pin a datatype the arrays are then cast to).
``parameters: {output_names: {label: ..., probabilities: ..., transform: ...}}`` serves the
outputs under other names (an MLServer model's ``predict``, ``predict_proba`` and ``transform``:
servekit.formats.mlserver); ``label_column: true`` answers a one-dimensional label as a column
``[-1, 1]``, and ``probabilities_datatype: FP64`` keeps predict_proba's float64 (both as
MLServer answers).

Tables: with ``table_input`` (ModelConfig) other than ``never``, a request may send named
columns instead (``servekit.codecs.table``); the estimator then gets them as a pandas DataFrame,
BYTES columns as strings, as MLServer's pandas codec builds it. Such a runtime answers request
by request (``per_request``), computing only the outputs each asks for; an estimator that
refuses the columns (one missing, strings where numbers go) is a 400 naming its reason.
pandas is imported only for a table, and its absence is an error naming the package.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import skops.io

from servekit.codecs.table import is_table
from servekit.errors import ConfigError, InvalidInput, ServekitError
from servekit.runtimes.base import Arrays, Runtime, RuntimeRequest, Signature, find_file
from servekit.types import TensorSpec, numpy_dtype

__all__ = ["SklearnRuntime"]

_LABEL = "label"
_PROBABILITIES = "probabilities"
_TRANSFORM = "transform"
# Each derived output and the estimator method that answers it.
_METHODS = {_LABEL: "predict", _PROBABILITIES: "predict_proba", _TRANSFORM: "transform"}


class SklearnRuntime(Runtime):
    platform = "sklearn"
    # Fitted estimators only read their state in predict / predict_proba / transform.
    thread_safe = True
    # Each row's answer is its own (as a merging runtime's): a large request may be cut into parts.
    splits_by_rows = True

    def load(self) -> None:
        config = self.context.config
        path = find_file(self.context.version_dir, (".skops", ".joblib", ".pkl"), self.context.config.model_file)
        if path.suffix == ".skops":
            estimator = _load_skops(path, _trusted_types(config.parameters, path))
        else:
            estimator = _load_pickle(path, config.trust_pickle)
        if not (_has(estimator, "predict") or _has(estimator, "transform")):
            raise ConfigError(f"{path}: holds a {type(estimator).__name__}, which has neither predict() nor "
                              "transform()")
        self._estimator = estimator
        self._label_column = _flag(config.parameters, "label_column", path)
        names = _output_names(config.parameters, path)
        transform = _has(estimator, "transform") and (_TRANSFORM in names or not _has(estimator, "predict"))
        derived = _derive_signature(estimator, _probabilities_datatype(config.parameters, path), transform)
        if self._label_column:
            derived = _as_column(derived)
        # Served name -> the estimator's method; the label's served name, for label_column.
        self._methods: dict[str, Any] = {names.get(spec.name, spec.name): getattr(estimator, _METHODS[spec.name])
                                         for spec in derived.outputs}
        self._label_name = names.get(_LABEL, _LABEL)
        self._signature = Signature(derived.inputs, tuple(TensorSpec(names.get(spec.name, spec.name), spec.datatype,
                                                                     spec.shape) for spec in derived.outputs))
        if config.inputs:
            if len(config.inputs) != 1:
                raise ConfigError(f"{self.context.model_dir}: a sklearn model takes exactly one input")
            self._signature = Signature((config.inputs[0].spec(),), self._signature.outputs)
        offered = {spec.name for spec in self._signature.outputs}
        if config.outputs:
            unknown = [t.name for t in config.outputs if t.name not in offered]
            if unknown:
                raise ConfigError(
                    f"{self.context.model_dir}: this estimator gives only {', '.join(sorted(offered))};"
                    f" cannot serve output(s) {', '.join(unknown)}"
                )
            self._signature = Signature(self._signature.inputs, tuple(t.spec() for t in config.outputs))
        missing = [name for name in config.default_outputs or () if name not in offered]
        if missing:
            raise ConfigError(
                f"{path}: holds a {type(estimator).__name__}, which answers only {', '.join(sorted(offered))}; the "
                f"default output {', '.join(missing)} is not one of them: set default_outputs (an MLServer model: "
                "parameters.extra.predict_fn) to one it answers"
            )
        self._datatypes = {spec.name: spec.datatype for spec in self._signature.outputs}
        self._tables = config.table_input
        # A table request's columns are its own: such requests are never merged with others.
        self.per_request = self._tables != "never"

    def signature(self) -> Signature:
        return self._signature

    def predict(self, inputs: Arrays) -> Arrays:
        return self._outputs(self._features(inputs), [spec.name for spec in self._signature.outputs], table=False)

    def predict_requests(self, requests: Sequence[RuntimeRequest]) -> list[Arrays | Exception]:
        """Each request a table or a tensor, with only the outputs it asks for. Tensors asking the same
        outputs run as one merged batch (the data plane checked their width and datatype); a table runs alone."""
        default = tuple(self.context.config.default_outputs or (spec.name for spec in self._signature.outputs))
        answers: list[Arrays | Exception] = [InvalidInput("not answered")] * len(requests)
        tensors: dict[tuple[str, ...], list[tuple[int, np.ndarray[Any, Any]]]] = {}
        for index, request in enumerate(requests):
            wanted = tuple(request.requested_outputs) or default
            try:
                if is_table(self._tables, request.parameters):
                    answers[index] = self._outputs(_frame(request.inputs), list(wanted), table=True)
                else:
                    tensors.setdefault(wanted, []).append((index, self._features(request.inputs)))
            except Exception as exc:  # this request's failure alone
                answers[index] = exc
        for wanted, group in tensors.items():
            try:
                merged = group[0][1] if len(group) == 1 else np.concatenate([features for _, features in group])
                outputs = self._outputs(merged, list(wanted), table=False)
            except Exception as exc:  # the merged batch fails together, as a merging runtime's does
                for index, _ in group:
                    answers[index] = exc
                continue
            start = 0
            for index, features in group:
                answers[index] = {name: array[start:start + len(features)] for name, array in outputs.items()}
                start += len(features)
        return answers

    def _features(self, inputs: Arrays) -> np.ndarray[Any, Any]:
        name = self._signature.inputs[0].name
        if name not in inputs:
            raise InvalidInput(f"missing input {name!r}")
        features = inputs[name]
        if features.ndim != 2:
            raise InvalidInput(f"input {name!r} must be 2-D (rows x features), got shape {features.shape}")
        return features

    def _outputs(self, features: Any, names: list[str], table: bool) -> Arrays:
        outputs: Arrays = {}
        for name in names:
            try:
                array = _dense(self._methods[name](features))
            except (ValueError, TypeError, KeyError) as exc:
                if not table:
                    raise
                # The columns are the client's: an estimator that cannot read them says why.
                raise InvalidInput(f"the estimator cannot read these columns: {type(exc).__name__}: {exc}") from None
            if self._label_column and name == self._label_name and array.ndim == 1:
                array = array.reshape(-1, 1)
            outputs[name] = _as_datatype(array, self._datatypes[name])
        return outputs

    def unload(self) -> None:
        self._estimator = None
        self._methods = {}


def _output_names(parameters: dict[str, Any], path: Path) -> dict[str, str]:
    """``parameters.output_names``: the derived outputs' served names (label, probabilities, transform)."""
    names = parameters.get("output_names", {})
    if not (isinstance(names, dict) and set(names) <= set(_METHODS)
            and all(isinstance(name, str) and name for name in names.values())):
        raise ConfigError(f"{path}: parameters.output_names maps {', '.join(map(repr, _METHODS))} to other names")
    return dict(names)


def _dense(result: Any) -> np.ndarray[Any, Any]:
    """A method's result as a numpy array (a sparse matrix, as a OneHotEncoder's transform gives, made dense)."""
    return np.asarray(result.toarray() if callable(getattr(result, "toarray", None)) else result)


def _has(estimator: Any, method: str) -> bool:
    """Whether the estimator has ``method`` (a Pipeline hides the ones its last step lacks)."""
    return callable(getattr(estimator, method, None))


def _frame(columns: Arrays) -> Any:
    """The columns as one pandas DataFrame, in their order; BYTES columns as strings."""
    try:
        import pandas
    except ImportError:
        raise ServekitError("reading a request's columns as a table (content_type pd) needs pandas, which is not "
                            "installed here: pip install 'servekit[sklearn]'") from None
    return pandas.DataFrame({name: _strings(name, column) if column.dtype == object else column
                             for name, column in columns.items()})


def _strings(name: str, column: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    try:
        return np.array([value.decode() if isinstance(value, bytes) else value for value in column], dtype=object)
    except UnicodeDecodeError:
        raise InvalidInput(f"column {name!r}: BYTES values of a table are read as UTF-8 text") from None


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
    return Signature(signature.inputs, tuple(
        TensorSpec(spec.name, spec.datatype, (-1, 1)) if spec.name == _LABEL and len(spec.shape) == 1 else spec
        for spec in signature.outputs))


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


def _derive_signature(estimator: Any, probabilities_datatype: str, transform: bool) -> Signature:
    n_features = getattr(estimator, "n_features_in_", None)
    width = int(n_features) if isinstance(n_features, int | np.integer) else -1
    inputs = (TensorSpec("input", "FP32", (-1, width)),)
    outputs = [_label_spec(estimator, width)] if _has(estimator, "predict") else []
    classes = getattr(estimator, "classes_", None)
    # Multi-output classifiers keep a list of class arrays and return a list of probabilities.
    if _has(estimator, "predict_proba") and isinstance(classes, np.ndarray) and classes.ndim == 1:
        outputs.append(TensorSpec(_PROBABILITIES, probabilities_datatype, (-1, len(classes))))
    if transform:
        outputs.append(_transform_spec(estimator, width))
    return Signature(inputs, tuple(outputs))


def _label_spec(estimator: Any, width: int) -> TensorSpec:
    classes = getattr(estimator, "classes_", None)
    if isinstance(classes, np.ndarray) and classes.ndim == 1:
        return TensorSpec(_LABEL, _datatype_of(classes), (-1,))
    # A regressor says nothing of its output's dtype and width until it runs once.
    probe = _probe(estimator.predict, width)
    if probe is None:
        return TensorSpec(_LABEL, "FP64", (-1,))
    return TensorSpec(_LABEL, _datatype_of(probe), (-1, *probe.shape[1:]))


def _transform_spec(estimator: Any, width: int) -> TensorSpec:
    probe = _probe(estimator.transform, width)
    if probe is not None and probe.ndim == 2:
        return TensorSpec(_TRANSFORM, _datatype_of(probe), (-1, probe.shape[1]))
    try:  # an estimator fitted on named columns cannot run on a row of zeros; it may still name its outputs
        columns = len(estimator.get_feature_names_out())
    except Exception:
        columns = -1
    return TensorSpec(_TRANSFORM, "FP64", (-1, columns))


def _probe(method: Any, width: int) -> np.ndarray[Any, Any] | None:
    """``method`` run on one FP32 row of zeros, or None when that cannot tell (an unknown width, or an
    estimator that reads named columns and refuses a plain array)."""
    if width <= 0:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _dense(method(np.zeros((1, width), dtype=np.float32)))
    except Exception:
        return None


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
