"""Small model repositories built in code for tests (no committed binaries)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

WEIGHTS = np.arange(12, dtype=np.float32).reshape(4, 3) / 10


def write_onnx_model(version_dir: Path, weights: np.ndarray[object, object] = WEIGHTS) -> Path:
    """x FP32 [batch, 4] -> y = x @ W FP32 [batch, 3], label = argmax(y) INT64 [batch]."""
    version_dir.mkdir(parents=True, exist_ok=True)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["y"]),
            helper.make_node("ArgMax", ["y"], ["label"], axis=1, keepdims=0),
        ],
        "matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
        ],
        [helper.make_tensor("W", TensorProto.FLOAT, list(weights.shape), np.asarray(weights).ravel())],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = version_dir / "model.onnx"
    onnx.save(model, path)
    return path


def write_repository(root: Path, configs: dict[str, str | None]) -> Path:
    """One ONNX model per name (version 1), with the given config.yaml text (None: no file)."""
    for name, config in configs.items():
        write_onnx_model(root / name / "1")
        if config is not None:
            (root / name / "config.yaml").write_text(config)
    return root
