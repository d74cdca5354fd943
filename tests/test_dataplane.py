from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from servekit.dataplane import DataPlane
from servekit.errors import ModelNotFound
from servekit.repository.registry import Registry
from servekit.types import InferenceRequest, Tensor

HANDLER = '''
import numpy as np
from servekit import BaseHandler

class Scores(BaseHandler):
    def inference(self, inputs):
        x = inputs["x"].astype(np.float64)          # deliberately not the declared FP32
        return {"score": x.sum(axis=1, keepdims=True), "name": np.array([b"row"] * len(x), dtype=object)}
'''

CONFIG = """
inputs: [{name: x, datatype: FP32, shape: [-1, 2]}]
outputs:
  - {name: score, datatype: FP32, shape: [-1, 1]}
  - {name: name, datatype: BYTES, shape: [-1]}
"""


@pytest.fixture
def plane(tmp_path: Path) -> DataPlane:
    (tmp_path / "scores" / "1").mkdir(parents=True)
    (tmp_path / "scores" / "handler.py").write_text(HANDLER)
    (tmp_path / "scores" / "config.yaml").write_text(CONFIG)
    registry = Registry(tmp_path)
    asyncio.run(registry.load_all())
    return DataPlane(registry)


def test_outputs_are_cast_to_their_declared_datatype(plane: DataPlane) -> None:
    x = np.array([[1, 2], [3, 4]], dtype=np.float32)
    request = InferenceRequest("scores", [Tensor("x", "FP32", (2, 2), x)])
    response = asyncio.run(plane.infer(request))
    score, name = response.outputs
    assert score.datatype == "FP32" and score.data.dtype == np.float32
    assert score.data.ravel().tolist() == [3.0, 7.0]
    assert name.datatype == "BYTES" and name.data.tolist() == [b"row", b"row"]


def test_simple_api_reads_labels_from_bytes_and_probabilities_from_2d_floats(plane: DataPlane) -> None:
    result = asyncio.run(plane.predict(np.ones((1, 2), dtype=np.float32), return_probabilities=True))
    assert result.predictions.tolist() == [b"row"]
    assert result.probabilities is not None and result.probabilities.tolist() == [[2.0]]


def test_default_model_is_the_only_model_or_the_named_one(plane: DataPlane, tmp_path: Path) -> None:
    assert plane.default_model() == "scores"
    (tmp_path / "other").mkdir()
    plane.registry.discover()
    with pytest.raises(ModelNotFound, match="--default-model"):
        plane.default_model()
    assert DataPlane(plane.registry, default_model="scores").default_model() == "scores"
