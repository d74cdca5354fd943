"""OnnxRuntime: signature from the graph, batch predict, BYTES round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from servekit.batching import execution
from servekit.config import ModelConfig, parse_model_config
from servekit.runtimes import Runtime, RuntimeContext, create_runtime
from servekit.serving.version import ModelVersion, load_version
from servekit.types import TensorSpec

OPSET = 17


def _save(graph: onnx.GraphProto, version_dir: Path) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(model)
    version_dir.mkdir(parents=True)
    onnx.save_model(model, str(version_dir / "model.onnx"))


def _runtime(model_dir: Path, config: ModelConfig | None = None) -> Runtime:
    context = RuntimeContext("m", 1, model_dir, model_dir / "1", config=config or ModelConfig())
    runtime = create_runtime("onnx", context)
    runtime.load()
    return runtime


def _linear_model(model_dir: Path) -> None:
    """y = x @ W + b with W [3, 2]; a dynamic batch dim; plus an argmax INT64 output."""
    weight = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]], dtype=np.float32)
    bias = np.array([0.5, -0.5], dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["x", "weight", "bias"], ["y"]),
            helper.make_node("ArgMax", ["y"], ["best"], axis=1, keepdims=0),
        ],
        "linear",
        inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        outputs=[
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2]),
            helper.make_tensor_value_info("best", TensorProto.INT64, ["batch"]),
        ],
        initializer=[numpy_helper.from_array(weight, "weight"), numpy_helper.from_array(bias, "bias")],
    )
    _save(graph, model_dir / "1")


def test_signature_comes_from_the_graph_with_dynamic_batch_as_minus_one(tmp_path: Path) -> None:
    _linear_model(tmp_path)
    signature = _runtime(tmp_path).signature()
    assert signature is not None
    assert signature.inputs == (TensorSpec("x", "FP32", (-1, 3)),)
    assert signature.outputs == (TensorSpec("y", "FP32", (-1, 2)), TensorSpec("best", "INT64", (-1,)))


@pytest.mark.parametrize("rows", [1, 5])
def test_predict_returns_every_output_with_one_row_per_input_row(tmp_path: Path, rows: int) -> None:
    _linear_model(tmp_path)
    x = np.arange(rows * 3, dtype=np.float32).reshape(rows, 3)
    outputs = _runtime(tmp_path).predict({"x": x})
    assert set(outputs) == {"y", "best"}
    expected = x @ np.array([[1, 0], [0, 1], [1, -1]], dtype=np.float32) + np.array([0.5, -0.5], dtype=np.float32)
    np.testing.assert_allclose(outputs["y"], expected)
    assert outputs["y"].dtype == np.float32
    assert outputs["best"].dtype == np.int64
    np.testing.assert_array_equal(outputs["best"], expected.argmax(axis=1))


def test_bytes_identity_model_round_trips_bytes(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["text"], ["same"])],
        "identity",
        inputs=[helper.make_tensor_value_info("text", TensorProto.STRING, ["batch"])],
        outputs=[helper.make_tensor_value_info("same", TensorProto.STRING, ["batch"])],
    )
    _save(graph, tmp_path / "1")
    runtime = _runtime(tmp_path)
    signature = runtime.signature()
    assert signature is not None
    assert signature.inputs == (TensorSpec("text", "BYTES", (-1,)),)
    assert signature.outputs == (TensorSpec("same", "BYTES", (-1,)),)

    sent = np.array([b"hello", "caf\u00e9".encode(), b""], dtype=object)
    result = runtime.predict({"text": sent})["same"]
    assert result.dtype == object
    assert list(result) == [b"hello", "caf\u00e9".encode(), b""]
    assert all(isinstance(item, bytes) for item in result)


def test_missing_model_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "1").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no file ending in \.onnx"):
        _runtime(tmp_path)


def _intra_op_threads(version: ModelVersion) -> int:
    runtime = version.batcher._instances[0].runtime
    threads: int = runtime._session.get_session_options().intra_op_num_threads  # type: ignore[attr-defined]
    return threads


@pytest.mark.parametrize(("config", "inline", "threads"), [
    ("max_batch_size: 8\n", True, 1),  # fast: inline, so one thread and no spinning worker beside the loop
    ("max_batch_size: 8\nbatching: {execution: thread}\n", False, 0),  # onnxruntime chooses
    ("max_batch_size: 8\nonnx: {intra_op_threads: 2}\n", True, 2),  # a count the config sets is kept
])
def test_a_model_run_inline_gets_one_intra_op_thread_unless_configured(
        tmp_path: Path, config: str, inline: bool, threads: int, monkeypatch: pytest.MonkeyPatch) -> None:
    _linear_model(tmp_path)
    # auto's verdict as on any machine where this model is fast: a clock that never moves (the real
    # probe's speed depends on the machine's load; tests/batching/test_execution.py covers the probe).
    monkeypatch.setattr(execution, "probe_clock", lambda: 0.0)
    version = load_version("m", tmp_path, 1, parse_model_config(config, "config.yaml"))
    try:
        assert version.batcher.inline is inline
        assert _intra_op_threads(version) == threads
        x = np.array([[1.0, 2.0, 3.0]], dtype=np.float32)
        assert version.batcher._instances[0].runtime.predict({"x": x})["y"].tolist() == [[4.5, -1.5]]
    finally:
        for instance in version.batcher._instances:
            instance.runtime.unload()
