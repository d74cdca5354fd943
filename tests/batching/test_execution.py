"""Choosing where a model version's batches run (servekit.batching.execution)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from servekit.batching import execution
from servekit.batching.execution import INLINE_BELOW_S, choose_execution, probe_inputs
from servekit.config import ModelConfig, parse_model_config
from servekit.errors import ConfigError
from servekit.runtimes.base import Arrays, Runtime, RuntimeContext
from servekit.types import TensorSpec

SPECS = (TensorSpec("x", "FP32", (-1, 4)),)


class FakeClock:
    """A clock that moves only when a runtime says its compute took time: verdicts do not depend on the
    machine's speed or load."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class TimedRuntime(Runtime):
    """Each predict "takes" ``seconds`` on ``clock``."""

    def __init__(self, clock: FakeClock, seconds: float = 0.0, *, fails: bool = False) -> None:
        super().__init__(RuntimeContext("m", 1, Path("."), Path("1"), ModelConfig()))
        self.clock = clock
        self.seconds = seconds
        self.fails = fails
        self.shapes: list[tuple[int, ...]] = []

    def load(self) -> None:
        pass

    def predict(self, inputs: Arrays) -> Arrays:
        self.shapes.append(inputs["x"].shape)
        if self.fails:
            raise ValueError("no zeros here")
        self.clock.now += self.seconds
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
    clock = FakeClock()
    runtime = TimedRuntime(clock)
    assert choose_execution("inline", "python", [runtime], SPECS, "m:1", clock=clock) is True
    assert choose_execution("thread", "onnx", [runtime], SPECS, "m:1", clock=clock) is False
    assert runtime.shapes == []


@pytest.mark.parametrize("seconds", [0.0, INLINE_BELOW_S * 0.9])
def test_auto_runs_a_fast_compute_only_model_inline(seconds: float) -> None:
    clock = FakeClock()
    runtime = TimedRuntime(clock, seconds)
    assert choose_execution("auto", "onnx", [runtime], SPECS, "m:1", clock=clock) is True
    assert len(runtime.shapes) == 2 + 21 and all(shape == (1, 4) for shape in runtime.shapes)


def test_auto_decides_on_the_median_not_on_one_slow_run() -> None:
    clock = FakeClock()
    runtime = TimedRuntime(clock, INLINE_BELOW_S / 2)
    original = runtime.predict
    calls = 0

    def one_slow_run(inputs: Arrays) -> Arrays:
        nonlocal calls
        calls += 1
        if calls == 5:  # a measured run (after the two warm-ups) hit by, say, a busy machine
            clock.now += 1.0
        return original(inputs)

    runtime.predict = one_slow_run  # type: ignore[method-assign]
    assert choose_execution("auto", "onnx", [runtime], SPECS, "m:1", clock=clock) is True


@pytest.mark.parametrize("case", ["slow", "handler", "two instances", "probe fails", "open shape"])
def test_auto_keeps_the_thread_for_anything_not_known_fast(case: str) -> None:
    clock = FakeClock()
    runtime = TimedRuntime(clock, seconds=INLINE_BELOW_S * 3 if case == "slow" else 0.0,
                           fails=case == "probe fails")
    runtimes = [runtime, TimedRuntime(clock)] if case == "two instances" else [runtime]
    specs = (TensorSpec("x", "FP32", (-1, -1)),) if case == "open shape" else SPECS
    name = "python" if case == "handler" else "onnx"
    assert choose_execution("auto", name, runtimes, specs, "m:1", clock=clock) is False


def test_auto_reads_the_module_probe_clock_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(execution, "probe_clock", clock)
    assert choose_execution("auto", "onnx", [TimedRuntime(clock, INLINE_BELOW_S * 3)], SPECS, "m:1") is False
    assert choose_execution("auto", "onnx", [TimedRuntime(clock, 0.0)], SPECS, "m:1") is True


def test_config_rejects_inline_with_several_instances() -> None:
    assert parse_model_config("batching: {execution: inline}\n", "c.yaml").batching.execution == "inline"
    assert parse_model_config("", "c.yaml").batching.execution == "auto"
    with pytest.raises(ConfigError, match="instances"):
        parse_model_config("instances: 2\nbatching: {execution: inline}\n", "c.yaml")
    with pytest.raises(ConfigError, match="execution"):
        parse_model_config("batching: {execution: fast}\n", "c.yaml")


def test_a_clearly_slow_model_is_judged_on_its_warm_up_without_the_median_runs() -> None:
    clock = FakeClock()
    runtime = TimedRuntime(clock, seconds=INLINE_BELOW_S * 20)
    assert choose_execution("auto", "onnx", [runtime], SPECS, "m:1", clock=clock) is False
    assert len(runtime.shapes) == 2  # the two warm-ups only, not 21 more
