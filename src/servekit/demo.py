"""The demo model repository: one digits classifier, served four ways.

``write_demo_repository`` trains a small MLP (64 -> 256 -> 10) on scikit-learn's bundled
``load_digits`` (offline, about two seconds) and writes the same weights as::

    digits/1/model.onnx             onnx runtime (built node by node with onnx.helper)
    digits/2/model.pt               TorchScript (only when torch is installed)
    digits_sklearn/1/model.skops    sklearn runtime
    digits_handler/handler.py       custom handler in plain numpy, with 1/weights.npz

The contract every demo model keeps: input "input" is FP32 ``[-1, 64]`` holding raw
``load_digits`` pixel rows (values 0..16); each model scales them to 0..1 itself (x / 16,
the scale the MLP was trained on); outputs are "probabilities" FP32 ``[-1, 10]`` and
"label" INT64 ``[-1]``. All of them give the same labels for the same rows.

Generation is deterministic: the MLP is trained with a fixed seed on the whole data set.
"""

from __future__ import annotations

import copy
import importlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["PIXEL_SCALE", "write_demo_repository"]

# Pixels come as 0..16; the MLP was trained on 0..1. 1/16 is exact in binary floating
# point, so scaling the input or folding the scale into the first layer give equal results.
PIXEL_SCALE = 1.0 / 16.0

_SHARED_CONFIG = """\
# Input: raw load_digits pixel rows, 64 floats in 0..16. The model scales them to
# 0..1 (x / 16) itself, as the MLP was trained on that scale.
max_batch_size: 32
batching:
  max_queue_delay_ms: 2
simple:
  prediction_output: label
  probability_output: probabilities
"""

_TENSORS = """\
inputs:
  - {name: input, datatype: FP32, shape: [-1, 64]}
outputs:
  - {name: probabilities, datatype: FP32, shape: [-1, 10]}
  - {name: label, datatype: INT64, shape: [-1]}
"""

_DIGITS_CONFIG = f"""\
# Digits MLP (64 -> 256 -> 10). Version 1 is ONNX, version 2 (when torch is installed)
# the same weights as TorchScript; each version's runtime is told by its model file.
{_SHARED_CONFIG}version_policy:
  all: true
default_version: 1
# Declared because TorchScript cannot describe its own tensors.
{_TENSORS}"""

_CACHE_CONFIG = """\
# The response cache (servekit demo --cache): a repeated input is answered without running the model.
cache:
  enabled: true
"""

_SKLEARN_CONFIG = f"""\
# Digits MLP as a scikit-learn MLPClassifier saved with skops; the pixel scale is
# folded into its first layer. The runtime derives the tensors: input FP32 [-1, 64],
# label INT64 [-1], probabilities FP32 [-1, 10].
runtime: sklearn
{_SHARED_CONFIG}"""

_HANDLER_CONFIG = f"""\
# Digits MLP as a custom handler in plain numpy (handler.py), weights in 1/weights.npz.
handler: handler.py
{_SHARED_CONFIG}{_TENSORS}"""

_HANDLER_SOURCE = '''\
"""Digits MLP (64 -> 256 -> 10) in plain numpy: the custom handler pattern, no framework."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from servekit.handler import BaseHandler, HandlerContext

# Pixels come as 0..16; the MLP was trained on 0..1.
PIXEL_SCALE = np.float32(1.0 / 16.0)


class DigitsHandler(BaseHandler):
    hidden_weight: NDArray[np.float32]
    hidden_bias: NDArray[np.float32]
    output_weight: NDArray[np.float32]
    output_bias: NDArray[np.float32]

    def initialize(self, context: HandlerContext) -> None:
        super().initialize(context)
        with np.load(context.version_dir / "weights.npz") as weights:
            self.hidden_weight = weights["hidden_weight"]
            self.hidden_bias = weights["hidden_bias"]
            self.output_weight = weights["output_weight"]
            self.output_bias = weights["output_bias"]

    def preprocess(self, inputs: dict[str, np.ndarray[Any, Any]]) -> NDArray[np.float32]:
        return inputs["input"].astype(np.float32) * PIXEL_SCALE

    def inference(self, data: NDArray[np.float32]) -> NDArray[np.float32]:
        hidden = np.maximum(data @ self.hidden_weight + self.hidden_bias, np.float32(0))
        logits: NDArray[np.float32] = hidden @ self.output_weight + self.output_bias
        return logits

    def postprocess(self, data: NDArray[np.float32]) -> dict[str, np.ndarray[Any, Any]]:
        # Subtracting the row maximum keeps exp() from overflowing; softmax is unchanged.
        exponent = np.exp(data - data.max(axis=1, keepdims=True))
        probabilities = exponent / exponent.sum(axis=1, keepdims=True)
        return {
            "probabilities": probabilities.astype(np.float32),
            "label": probabilities.argmax(axis=1).astype(np.int64),
        }
'''


@dataclass(frozen=True, slots=True)
class _MlpWeights:
    """float32 weights laid out for ``x @ weight + bias``, trained on pixels scaled to 0..1."""

    hidden_weight: np.ndarray[Any, Any]  # [64, 256]
    hidden_bias: np.ndarray[Any, Any]  # [256]
    output_weight: np.ndarray[Any, Any]  # [256, 10]
    output_bias: np.ndarray[Any, Any]  # [10]


def write_demo_repository(root: Path, *, include_torch: bool | None = None, cache: bool = False) -> list[str]:
    """Write the demo models under ``root`` (the repository folder) and return their names.

    Existing files of the same names are overwritten; nothing else in ``root`` is touched.
    ``include_torch=None`` writes the TorchScript version only when torch can be imported;
    ``True`` requires torch. ``cache=True`` turns the response cache on for ``digits`` (its answers
    depend on its inputs alone), as the compose stack does to show Redis at work.
    """
    if include_torch is None:
        include_torch = _torch_importable()
    classifier = _train_classifier()
    weights = _MlpWeights(
        hidden_weight=classifier.coefs_[0].astype(np.float32),
        hidden_bias=classifier.intercepts_[0].astype(np.float32),
        output_weight=classifier.coefs_[1].astype(np.float32),
        output_bias=classifier.intercepts_[1].astype(np.float32),
    )

    digits = _model_dir(root, "digits", _DIGITS_CONFIG + (_CACHE_CONFIG if cache else ""))
    _write_onnx(_version_dir(digits, 1) / "model.onnx", weights)
    if include_torch:
        _write_torchscript(_version_dir(digits, 2) / "model.pt", weights)

    sklearn_dir = _model_dir(root, "digits_sklearn", _SKLEARN_CONFIG)
    _write_skops(_version_dir(sklearn_dir, 1) / "model.skops", classifier)

    handler_dir = _model_dir(root, "digits_handler", _HANDLER_CONFIG)
    (handler_dir / "handler.py").write_text(_HANDLER_SOURCE)
    np.savez(
        _version_dir(handler_dir, 1) / "weights.npz",
        hidden_weight=weights.hidden_weight,
        hidden_bias=weights.hidden_bias,
        output_weight=weights.output_weight,
        output_bias=weights.output_bias,
    )
    return ["digits", "digits_sklearn", "digits_handler"]


def _torch_importable() -> bool:
    try:
        importlib.import_module("torch")
    except ImportError:
        return False
    return True


def _model_dir(root: Path, name: str, config: str) -> Path:
    model_dir = root / name
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.yaml").write_text(config)
    return model_dir


def _version_dir(model_dir: Path, version: int) -> Path:
    version_dir = model_dir / str(version)
    version_dir.mkdir(exist_ok=True)
    return version_dir


def _train_classifier() -> Any:
    """An MLPClassifier fitted on every load_digits row, pixels scaled to 0..1."""
    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from threadpoolctl import threadpool_limits

    pixels, labels = load_digits(return_X_y=True)
    classifier = MLPClassifier(hidden_layer_sizes=(256,), max_iter=200, random_state=0)
    # One BLAS thread: matrices this small train faster without thread hand-offs (several
    # times faster once torch's OpenMP pool is also awake), and the sums come out in the
    # same order whatever the machine's core count, so the weights are reproducible.
    with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
        # A demo needs a good model, not a fully converged one; the warning would only confuse.
        warnings.simplefilter("ignore", ConvergenceWarning)
        classifier.fit(pixels * PIXEL_SCALE, labels)
    return classifier


def _write_onnx(path: Path, weights: _MlpWeights) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    initializers = [
        numpy_helper.from_array(np.array([PIXEL_SCALE], dtype=np.float32), "pixel_scale"),
        numpy_helper.from_array(weights.hidden_weight, "hidden_weight"),
        numpy_helper.from_array(weights.hidden_bias, "hidden_bias"),
        numpy_helper.from_array(weights.output_weight, "output_weight"),
        numpy_helper.from_array(weights.output_bias, "output_bias"),
    ]
    nodes = [
        helper.make_node("Mul", ["input", "pixel_scale"], ["scaled"]),
        helper.make_node("Gemm", ["scaled", "hidden_weight", "hidden_bias"], ["hidden_linear"]),
        helper.make_node("Relu", ["hidden_linear"], ["hidden"]),
        helper.make_node("Gemm", ["hidden", "output_weight", "output_bias"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "digits_mlp",
        inputs=[helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 64])],
        outputs=[
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10]),
            helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
        ],
        initializer=initializers,
    )
    model = helper.make_model(
        graph,
        # Opset 21 (2024): current, and still loadable by onnxruntime releases a year or two old.
        opset_imports=[helper.make_opsetid("", min(21, onnx.defs.onnx_opset_version()))],
        producer_name="servekit.demo",
    )
    onnx.checker.check_model(model, full_check=True)
    onnx.save_model(model, str(path))


def _write_torchscript(path: Path, weights: _MlpWeights) -> None:
    import torch

    class DigitsMlp(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.hidden = torch.nn.Linear(64, 256)
            self.output = torch.nn.Linear(256, 10)

        def forward(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
            hidden = torch.relu(self.hidden(pixels * 0.0625))
            probabilities = torch.softmax(self.output(hidden), dim=1)
            return {"probabilities": probabilities, "label": torch.argmax(probabilities, dim=1)}

    module = DigitsMlp()
    with torch.no_grad():
        # torch.nn.Linear computes x @ weight.T, so its weights are the transposes.
        module.hidden.weight.copy_(torch.from_numpy(weights.hidden_weight.T.copy()))
        module.hidden.bias.copy_(torch.from_numpy(weights.hidden_bias))
        module.output.weight.copy_(torch.from_numpy(weights.output_weight.T.copy()))
        module.output.bias.copy_(torch.from_numpy(weights.output_bias))
    module.eval()
    with warnings.catch_warnings():
        # TorchScript is deprecated upstream; the demo still shows serving a .pt file.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(module), str(path))


def _write_skops(path: Path, classifier: Any) -> None:
    import skops.io

    exported = copy.deepcopy(classifier)
    # Fold the pixel scale into the first layer so the estimator takes raw pixels with no
    # preprocessing step (a FunctionTransformer would not load as a trusted skops type).
    exported.coefs_[0] = exported.coefs_[0] * PIXEL_SCALE
    # The optimizer state only serves further training, and skops does not trust its type.
    exported._optimizer = None
    skops.io.dump(exported, path)
