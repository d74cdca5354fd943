"""The simple API over the data plane: default model, row width, predictions and probabilities."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from servekit.errors import InvalidInput, ModelNotFound
from servekit.serving.dataplane import DataPlane
from servekit.serving.registry import Registry
from servekit.serving.simple import SimpleAPI, as_distribution
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
    # one float column: its softmax is a distribution of one class
    assert result.probabilities is not None and result.probabilities.tolist() == [[1.0]]
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
    assert simple.health() == {"status": "unhealthy", "model_loaded": True, "device": "cpu"}  # not started
    plane.started = True
    assert simple.health() == {"status": "healthy", "model_loaded": True, "device": "cpu"}
    assert SimpleAPI(plane, "nope").health() == {"status": "unhealthy", "model_loaded": False, "device": "none"}
    asyncio.run(registry.unload("scores"))
    assert simple.health() == {"status": "unhealthy", "model_loaded": False, "device": "none"}


def test_a_model_with_two_inputs_is_refused(tmp_path: Path) -> None:
    _model(tmp_path, "pair", TWO_INPUTS, TWO_INPUTS_HANDLER)
    registry = Registry(tmp_path)
    asyncio.run(registry.load_all())
    with pytest.raises(InvalidInput, match="one input; 'pair' has 2"):
        asyncio.run(SimpleAPI(DataPlane(registry)).predict(np.ones((1, 1), dtype=np.float32), False))


def test_probabilities_are_a_distribution_per_row() -> None:
    logits = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], dtype=np.float32)
    softmax = as_distribution(logits, "auto")
    assert softmax.dtype == np.float32
    np.testing.assert_allclose(softmax.sum(axis=1), [1.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(softmax[0], np.exp([1, 2, 3]) / np.exp([1, 2, 3]).sum(), rtol=1e-6)
    np.testing.assert_allclose(softmax[1], [1 / 3] * 3, rtol=1e-6)
    already = np.array([[0.25, 0.75], [1.0, 0.0]], dtype=np.float64)
    assert as_distribution(already, "auto") is already  # probabilities already: left as they are
    np.testing.assert_allclose(as_distribution(already, "softmax")[0], np.exp([0.25, 0.75]) / np.exp(
        [0.25, 0.75]).sum())
    negative = np.array([[-0.5, 1.5]], dtype=np.float32)  # sums to 1, but is not a distribution
    assert as_distribution(negative, "auto")[0, 1] > 0.5 and (as_distribution(negative, "auto") > 0).all()
    assert as_distribution(logits, "identity") is logits
    huge = np.array([[1000.0, 0.0]], dtype=np.float32)  # no overflow
    np.testing.assert_allclose(as_distribution(huge, "auto"), [[1.0, 0.0]])


def test_the_model_config_chooses_identity_for_scores_that_are_not_probabilities(tmp_path: Path) -> None:
    _model(tmp_path, "scores", CONFIG + "simple: {probabilities: identity}\n", HANDLER)
    registry = Registry(tmp_path)
    asyncio.run(registry.load_all())
    result = asyncio.run(SimpleAPI(DataPlane(registry)).predict(np.ones((1, 2), dtype=np.float32), True))
    assert result.probabilities is not None and result.probabilities.tolist() == [[2.0]]


def test_probabilities_are_read_from_a_model_whose_default_outputs_leave_them_out(tmp_path: Path) -> None:
    (tmp_path / "scores" / "1").mkdir(parents=True)
    (tmp_path / "scores" / "handler.py").write_text(HANDLER)
    (tmp_path / "scores" / "config.yaml").write_text(CONFIG + "default_outputs: [name]\n")
    registry = Registry(tmp_path)
    asyncio.run(registry.load_all())
    result = asyncio.run(SimpleAPI(DataPlane(registry)).predict(np.ones((1, 2), dtype=np.float32), True))
    assert result.predictions.tolist() == [b"row"]
    assert result.probabilities is not None and result.probabilities.tolist() == [[1.0]]
