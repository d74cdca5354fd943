"""The simple API over the data plane: default model, row width, predictions and probabilities."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from servekit.errors import InvalidInput, ModelNotFound
from servekit.serving.dataplane import DataPlane
from servekit.serving.registry import Registry
from servekit.serving.simple import SimpleAPI
from tests.serving.test_dataplane import CONFIG, HANDLER

TWO_INPUTS = """
inputs: [{name: a, datatype: FP32, shape: [-1, 1]}, {name: b, datatype: FP32, shape: [-1, 1]}]
outputs: [{name: score, datatype: FP32, shape: [-1, 1]}]
"""

TWO_INPUTS_HANDLER = """
from servekit import BaseHandler

class Sum(BaseHandler):
    def inference(self, inputs):
        return {"score": inputs["a"] + inputs["b"]}
"""


def _model(root: Path, name: str, config: str, handler: str) -> None:
    (root / name / "1").mkdir(parents=True)
    (root / name / "handler.py").write_text(handler)
    (root / name / "config.yaml").write_text(config)


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    _model(tmp_path, "scores", CONFIG, HANDLER)
    registry = Registry(tmp_path)
    asyncio.run(registry.load_all())
    return registry


def test_labels_come_from_bytes_outputs_and_probabilities_from_2d_floats(registry: Registry) -> None:
    simple = SimpleAPI(DataPlane(registry))
    result = asyncio.run(simple.predict(np.ones((1, 2), dtype=np.float32), return_probabilities=True))
    assert result.predictions.tolist() == [b"row"]
    assert result.probabilities is not None and result.probabilities.tolist() == [[2.0]]
    without = asyncio.run(simple.predict(np.ones((1, 2), dtype=np.float32), return_probabilities=False))
    assert without.probabilities is None


def test_the_default_model_is_the_only_model_or_the_named_one(registry: Registry, tmp_path: Path) -> None:
    plane = DataPlane(registry)
    assert SimpleAPI(plane).default_model() == "scores"
    (tmp_path / "other").mkdir()
    registry.discover()
    with pytest.raises(ModelNotFound, match="--default-model"):
        SimpleAPI(plane).default_model()
    assert SimpleAPI(plane, "scores").default_model() == "scores"
    assert SimpleAPI(plane, "scores").row_width(None) == ("scores", 2)


def test_health_names_the_device_and_needs_a_started_server(registry: Registry) -> None:
    plane = DataPlane(registry)
    simple = SimpleAPI(plane)
    assert simple.health() == {"status": "starting", "model_loaded": True, "device": "cpu"}
    plane.started = True
    assert simple.health() == {"status": "ok", "model_loaded": True, "device": "cpu"}
    assert SimpleAPI(plane, "nope").health() == {"status": "unavailable", "model_loaded": False, "device": "none"}


def test_a_model_with_two_inputs_is_refused(tmp_path: Path) -> None:
    _model(tmp_path, "pair", TWO_INPUTS, TWO_INPUTS_HANDLER)
    registry = Registry(tmp_path)
    asyncio.run(registry.load_all())
    with pytest.raises(InvalidInput, match="one input; 'pair' has 2"):
        asyncio.run(SimpleAPI(DataPlane(registry)).predict(np.ones((1, 1), dtype=np.float32), False))
