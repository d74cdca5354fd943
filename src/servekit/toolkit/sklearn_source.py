"""scikit-learn sources for ``servekit convert``: load an estimator, run it, convert it with skl2onnx.

The ONNX model speaks like servekit's sklearn runtime, so clients do not change when a
model moves from one runtime to the other: one FP32 input "input" ``[-1, n_features]``,
"label" (``predict()``) and, for classifiers, "probabilities" (``predict_proba()`` as a
plain tensor, not skl2onnx's default list of maps).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from servekit.toolkit.errors import ToolkitError
from servekit.toolkit.onnx_tools import target_opset
from servekit.toolkit.specs import Arrays
from servekit.types import TensorSpec

__all__ = ["SKLEARN_SUFFIXES", "SklearnModel", "convert_sklearn", "load_sklearn_model", "run_sklearn_model"]

SKLEARN_SUFFIXES = (".skops", ".joblib", ".pkl")
_INPUT = "input"
_LABEL = "label"
_PROBABILITIES = "probabilities"


@dataclass(frozen=True, slots=True)
class SklearnModel:
    estimator: Any
    inputs: list[TensorSpec]
    output_names: list[str]

    @property
    def kind(self) -> str:
        return f"scikit-learn {type(self.estimator).__name__}"


def load_sklearn_model(source: Path, trust: bool) -> SklearnModel:
    """Read an estimator: .skops refuses types skops does not trust unless ``trust``; a pickle
    (.joblib/.pkl) runs code when read, so it is read only with ``trust``."""
    if source.suffix == ".skops":
        import skops.io

        untrusted = skops.io.get_untrusted_types(file=source)
        if untrusted and not trust:
            raise ToolkitError(
                f"{source}: holds types skops does not trust ({', '.join(untrusted)}); pass --trust if you trust"
                " where the file came from"
            )
        estimator = skops.io.load(source, trusted=untrusted)
    else:
        if not trust:
            raise ToolkitError(f"{source}: reading a pickle runs whatever code it holds; pass --trust for a file"
                               " you made or trust (or save the model with skops)")
        import joblib

        estimator = joblib.load(source)
    if not callable(getattr(estimator, "predict", None)):
        raise ToolkitError(f"{source}: holds a {type(estimator).__name__}, which has no predict()")
    width = getattr(estimator, "n_features_in_", None)
    if not isinstance(width, int | np.integer):
        raise ToolkitError(f"{source}: the estimator does not say how many features it takes (n_features_in_)")
    outputs = [_LABEL, _PROBABILITIES] if _has_probabilities(estimator) else [_LABEL]
    return SklearnModel(estimator, [TensorSpec(_INPUT, "FP32", (-1, int(width)))], outputs)


def run_sklearn_model(model: SklearnModel, inputs: Arrays) -> Arrays:
    features = inputs[_INPUT]
    outputs: Arrays = {_LABEL: np.asarray(model.estimator.predict(features))}
    if _PROBABILITIES in model.output_names:
        outputs[_PROBABILITIES] = np.asarray(model.estimator.predict_proba(features))
    return outputs


def convert_sklearn(model: SklearnModel, opset: int | None) -> tuple[Any, str]:
    """The ONNX ModelProto of the estimator (batch dimension dynamic), and the converter's name."""
    import skl2onnx
    from skl2onnx.common.data_types import FloatTensorType

    chosen = target_opset(skl2onnx.get_latest_tested_opset_version(), opset)
    options = {id(model.estimator): {"zipmap": False}} if _PROBABILITIES in model.output_names else None
    try:
        onnx_model = skl2onnx.to_onnx(
            model.estimator, initial_types=[(_INPUT, FloatTensorType([None, model.inputs[0].shape[1]]))],
            target_opset=chosen, options=options,
        )
    except Exception as exc:
        raise ToolkitError(f"skl2onnx cannot convert {type(model.estimator).__name__}: {exc}") from None
    _rename_outputs(onnx_model, model.output_names)
    return onnx_model, f"skl2onnx {skl2onnx.__version__}"


def _has_probabilities(estimator: Any) -> bool:
    classes = getattr(estimator, "classes_", None)
    return callable(getattr(estimator, "predict_proba", None)) and isinstance(classes, np.ndarray) and classes.ndim == 1


def _rename_outputs(model: Any, names: list[str]) -> None:
    """Give the graph outputs servekit's names, in order (skl2onnx calls a regressor's "variable")."""
    graph = model.graph
    if len(graph.output) != len(names):
        raise ToolkitError(f"skl2onnx gave {len(graph.output)} outputs ({', '.join(o.name for o in graph.output)});"
                           f" expected {', '.join(names)}")
    renames = {output.name: name for output, name in zip(graph.output, names, strict=True) if output.name != name}
    for node in graph.node:
        for values in (node.input, node.output):
            for index, value in enumerate(values):
                if value in renames:
                    values[index] = renames[value]
    for output in graph.output:
        output.name = renames.get(output.name, output.name)
