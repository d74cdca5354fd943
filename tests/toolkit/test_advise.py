"""servekit advise: the static matrix, measured recommendations, and configs that load."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from servekit.cli import main
from servekit.config import parse_model_config
from servekit.toolkit.advise import recommend
from servekit.toolkit.errors import ToolkitError
from servekit.toolkit.matrix import parse_requirements, rank_patterns
from servekit.toolkit.measure import Candidate, Curve, Point, batch_sizes
from servekit.types import TensorSpec
from tests.conftest import TORCH_INSTALL, require_module

from ..builders import write_onnx_model
from .models import serve_once, write_sklearn_classifier

INPUTS = [TensorSpec("x", "FP32", (-1, 4))]


def _advise(*args: str) -> str:
    result = CliRunner().invoke(main, ["advise", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_without_a_model_prints_the_matrix_for_the_requirements() -> None:
    output = _advise("--require", "edge,cross-framework")
    assert "Decision matrix" in output and "edge (edge deployment)" in output and "latency" not in output
    assert "best fit: ONNX Runtime (total 10) -> in servekit: runtime: onnx" in output
    assert "not measurements" in output
    everything = _advise()
    assert all(name in everything for name in ("flexibility", "batteries", "debugging", "throughput"))


def test_weighted_requirements_print_each_product_and_the_weighted_sums() -> None:
    output = _advise("--require", "low_latency=2,throughput=1")
    # latency 5 x2 + throughput 5 for gRPC; ONNX Runtime 5 x2 + 4; TorchServe-style 4 x2 + 5; FastAPI-style 3 x2 + 3
    assert "best fit: gRPC transport (weighted sum 15)" in output
    assert "then: ONNX Runtime (weighted sum 14)" in output and "then: FastAPI-style (weighted sum 9)" in output
    assert "5 x2 = 10" in output and "weight" in output
    unweighted = _advise("--require", "latency,throughput")
    assert "best fit: gRPC transport (total 10)" in unweighted and " x1" not in unweighted


def test_weights_change_the_ranking() -> None:
    even = rank_patterns(parse_requirements("debugging,throughput"))
    assert [(p.name, s) for p, s in even[:2]] == [("FastAPI-style", 8), ("TorchServe-style", 8)]
    debugging = rank_patterns(parse_requirements("debugging=2,throughput"))
    assert (debugging[0][0].name, debugging[0][1]) == ("FastAPI-style", 13)
    throughput = rank_patterns(parse_requirements("debugging,throughput=3"))
    assert (throughput[0][0].name, throughput[0][1]) == ("TorchServe-style", 18)


@pytest.mark.parametrize(("text", "message"), [
    ("latency=0", "must be a number above 0, not '0'"), ("latency=-1", "above 0"), ("latency=fast", "not 'fast'"),
    ("latency=inf", "above 0"), ("=2", "needs a requirement"), ("speed=2", "--require 'speed'"),
    ("latency=2,low-latency=3", "given twice, with weights 2 and 3"),
])
def test_bad_weights_are_refused_with_what_was_wrong(text: str, message: str) -> None:
    with pytest.raises(ToolkitError, match=re.escape(message)):
        parse_requirements(text)
    result = CliRunner().invoke(main, ["advise", "--require", text])
    assert result.exit_code != 0 and message in result.output


def test_unknown_requirement_and_config_without_model_are_refused() -> None:
    result = CliRunner().invoke(main, ["advise", "--require", "speed"])
    assert result.exit_code != 0 and "--require 'speed'" in result.output
    result = CliRunner().invoke(main, ["advise", "--write-config", "x.yaml"])
    assert result.exit_code != 0 and "needs MODEL_PATH" in result.output


def test_onnx_model_folder_gets_a_config_that_loads(tmp_path: Path) -> None:
    write_onnx_model(tmp_path / "repo" / "m" / "1")
    config_path = tmp_path / "repo" / "m" / "config.yaml"
    output = _advise(str(tmp_path / "repo" / "m"), "--budget", "0.5", "--max-batch", "8", "--threads", "1",
                     "--write-config", str(config_path))
    assert "Measured: median ms per call" in output and "Recommendation for latency, throughput" in output
    assert "runtime   onnx (ONNX Runtime, 1 thread(s))" in output and f"wrote {config_path}" in output
    config = parse_model_config(config_path.read_text(), config_path)
    assert config.runtime == "onnx" and config.onnx.intra_op_threads == 1 and 1 <= (config.max_batch_size or 0) <= 8
    rows = np.ones((2, 4), dtype=np.float32)
    assert serve_once(tmp_path / "repo", "m", {"x": rows})["y"].shape == (2, 3)


def test_sklearn_model_measures_both_runtimes(tmp_path: Path) -> None:
    write_sklearn_classifier(tmp_path / "clf.skops")
    output = _advise(str(tmp_path / "clf.skops"), "--budget", "0.4", "--max-batch", "4", "--threads", "1",
                     "--require", "throughput")
    assert "scikit-learn" in output and "ONNX Runtime" in output
    assert "config.yaml:\n# Written by `servekit advise`" in output


def test_torchscript_model_measures_torch_and_onnx(tmp_path: Path) -> None:
    require_module("torch", TORCH_INSTALL)
    from .models import write_torch_models

    sources = write_torch_models(tmp_path / "src")
    output = _advise(str(sources["model.pt"]), "--input-shape", "1,8", "--budget", "0.4", "--max-batch", "4",
                     "--threads", "1", "--require", "debugging")
    assert "TorchScript" in output and "ONNX Runtime" in output
    # debugging keeps the model in its own framework, with the tensors TorchScript cannot tell declared
    assert "runtime   torchscript" in output and "{name: features, datatype: FP32, shape: [-1, 8]}" in output


def _curve(label: str, runtime: str | None, threads: int, ms: dict[int, float]) -> Curve:
    candidate = Candidate(label, runtime, threads, lambda arrays: arrays, INPUTS, INPUTS)
    return Curve(candidate, [Point(batch, 10, value, value) for batch, value in ms.items()])


# ONNX: fast alone, flattens out early. Torch: slower alone, scales further. Eager: fastest, not servable.
ONNX = _curve("ONNX Runtime", "onnx", 1, {1: 0.10, 2: 0.11, 4: 0.12, 8: 0.40, 16: 0.80})
TORCH = _curve("TorchScript", "torchscript", 2, {1: 0.30, 2: 0.31, 4: 0.32, 8: 0.33, 16: 0.35})
EAGER = _curve("PyTorch eager", None, 2, {1: 0.05, 2: 0.05, 4: 0.05, 8: 0.05, 16: 0.05})


def test_recommendation_follows_the_requirements() -> None:
    latency = recommend([ONNX, TORCH, EAGER], ["latency"], cores=2, source_runtime="torchscript")
    assert latency.curve is ONNX and latency.max_queue_delay_ms == 1.0 and latency.protocol == "grpc"
    throughput = recommend([ONNX, TORCH, EAGER], ["throughput"], cores=2, source_runtime="torchscript")
    assert throughput.curve is TORCH  # 16 rows in 0.35 ms beats ONNX's peak of 4 rows in 0.12 ms
    assert throughput.max_batch_size == 16 and throughput.max_queue_delay_ms == 1.0
    assert any("peak" in reason for reason in throughput.reasons)
    debugging = recommend([ONNX, TORCH], ["debugging", "flexibility"], 2, "torchscript")
    assert debugging.curve is TORCH and debugging.protocol == "simple" and debugging.handler
    edge = recommend([ONNX, TORCH], ["edge", "throughput"], 2, "torchscript")
    assert edge.curve is ONNX and edge.max_batch_size == 4  # the knee: 90 % of the peak rows/s
    assert edge.next_steps == [] and edge.instances == 2


def test_weights_tip_the_runtime_between_latency_and_throughput() -> None:
    # ONNX: 3x faster alone, 0.73x the peak rows/s of TorchScript: it wins at even weights and at throughput=3,
    # and loses once throughput weighs 4 (0.73 ** 4 = 0.28 < 1/3).
    assert recommend([ONNX, TORCH], {"latency": 1, "throughput": 1}, 2, "torchscript").curve is ONNX
    assert recommend([ONNX, TORCH], {"latency": 1, "throughput": 3}, 2, "torchscript").curve is ONNX
    heavy = recommend([ONNX, TORCH], parse_requirements("latency,throughput=4"), 2, "torchscript")
    assert heavy.curve is TORCH and any("weighted 1 to 4" in reason for reason in heavy.reasons)
    assert "requirements: latency, throughput=4." in heavy.config_text("m.pt")


def test_latency_goal_caps_the_batch() -> None:
    slow_batches = _curve("ONNX Runtime", "onnx", 1, {1: 1.0, 2: 1.5, 4: 2.5, 8: 6.0, 16: 12.0})
    advice = recommend([slow_batches], ["latency", "throughput"], 1, "onnx")
    assert advice.max_batch_size == 2  # the knee is 4 rows, but they take 2.5 ms: over twice a single row
    text = advice.config_text("m.onnx")
    assert parse_model_config(text, "x").max_batch_size == 2 and "# Written by `servekit advise`" in text


def test_requirements_and_ranking() -> None:
    assert parse_requirements("Low-Latency, throughput,latency") == {"latency": 1, "throughput": 1}
    assert list(parse_requirements("low_latency=2, throughput=0.5")) == ["latency", "throughput"]
    assert parse_requirements("low_latency=2, throughput=0.5") == {"latency": 2, "throughput": 0.5}
    with pytest.raises(ToolkitError, match="expected some of flexibility"):
        parse_requirements("fast")
    ranked = rank_patterns(["flexibility", "debugging"])
    assert (ranked[0][0].name, ranked[0][1]) == ("FastAPI-style", 10)
    assert batch_sizes(1) == [1] and batch_sizes(12) == [1, 2, 4, 8, 12] and batch_sizes(16) == [1, 2, 4, 8, 16]
