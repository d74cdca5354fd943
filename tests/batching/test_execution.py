"""Choosing where a model version's batches run (servekit.batching.execution)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from servekit.batching.execution import INLINE_BELOW_S, choose_execution, probe_inputs
from servekit.config import ModelConfig, parse_model_config
from servekit.errors import ConfigError
from servekit.runtimes.base import Arrays, Runtime, RuntimeContext
from servekit.types import TensorSpec

SPECS = (TensorSpec("x", "FP32", (-1, 4)),)


class TimedRuntime(Runtime):
    def __init__(self, seconds: float = 0.0, *, fails: bool = False) -> None:
        super().__init__(RuntimeContext("m", 1, Path("."), Path("1"), ModelConfig()))
        self.seconds = seconds
        self.fails = fails
        self.shapes: list[tuple[int, ...]] = []

    def load(self) -> None:
        pass

    def predict(self, inputs: Arrays) -> Arrays:
        self.shapes.append(inputs["x"].shape)
        if self.fails:
            raise ValueError("no zeros here")
        if self.seconds:
            time.sleep(self.seconds)
        return {"y": inputs["x"]}


def test_probe_inputs_are_one_row_of_zeros_or_none_when_unknowable() -> None:
    sample = probe_inputs(SPECS)
    assert sample is not None and sample["x"].shape == (1, 4) and sample["x"].dtype == np.float32
    assert not sample["x"].any()
    assert probe_inputs((TensorSpec("x", "FP32", (-1, -1)),)) is None
    assert probe_inputs((TensorSpec("s", "BYTES", (-1,)),)) is None
    unbatched = probe_inputs((TensorSpec("x", "INT64", (3,)),), batched=False)
    assert unbatched is not None and unbatched["x"].shape == (3,)


def test_explicit_choices_are_kept_without_probing() -> None:
    runtime = TimedRuntime()
    assert choose_execution("inline", "python", [runtime], SPECS, "m:1") is True
    assert choose_execution("thread", "onnx", [runtime], SPECS, "m:1") is False
    assert runtime.shapes == []


def test_auto_runs_a_fast_compute_only_model_inline() -> None:
    runtime = TimedRuntime()
    assert choose_execution("auto", "onnx", [runtime], SPECS, "m:1") is True
    assert runtime.shapes and all(shape == (1, 4) for shape in runtime.shapes)


@pytest.mark.parametrize("case", ["slow", "handler", "two instances", "probe fails", "open shape"])
def test_auto_keeps_the_thread_for_anything_not_known_fast(case: str) -> None:
    runtime = TimedRuntime(seconds=INLINE_BELOW_S * 3 if case == "slow" else 0.0, fails=case == "probe fails")
    runtimes = [runtime, TimedRuntime()] if case == "two instances" else [runtime]
    specs = (TensorSpec("x", "FP32", (-1, -1)),) if case == "open shape" else SPECS
    name = "python" if case == "handler" else "onnx"
    assert choose_execution("auto", name, runtimes, specs, "m:1") is False


def test_config_rejects_inline_with_several_instances() -> None:
    assert parse_model_config("batching: {execution: inline}\n", "c.yaml").batching.execution == "inline"
    assert parse_model_config("", "c.yaml").batching.execution == "auto"
    with pytest.raises(ConfigError, match="instances"):
        parse_model_config("instances: 2\nbatching: {execution: inline}\n", "c.yaml")
    with pytest.raises(ConfigError, match="execution"):
        parse_model_config("batching: {execution: fast}\n", "c.yaml")


def test_a_clearly_slow_model_is_judged_on_its_warm_up_without_the_median_runs() -> None:
    runtime = TimedRuntime(seconds=INLINE_BELOW_S * 20)
    assert choose_execution("auto", "onnx", [runtime], SPECS, "m:1") is False
    assert len(runtime.shapes) == 2  # the two warm-ups only, not 21 more
