from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from servekit.errors import ModelNotFound, ModelNotReady
from servekit.serving.dataplane import DataPlane
from servekit.serving.registry import Registry
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


def test_an_unknown_model_or_version_is_refused_before_any_body(plane: DataPlane) -> None:
    plane.require_model("scores")
    plane.require_model("scores", "1")
    with pytest.raises(ModelNotFound, match="unknown model 'nope'"):
        plane.require_model("nope")
    with pytest.raises(ModelNotFound, match="no version '2'"):
        plane.require_model("scores", "2")


def test_the_repository_extension_unloads_and_loads_again(plane: DataPlane) -> None:
    async def body() -> None:
        await plane.unload_model("scores")
        assert plane.repository_index() == [{"name": "scores", "state": "UNAVAILABLE", "reason": "unloaded"}]
        with pytest.raises(ModelNotReady):
            plane.require_model("scores")
        await plane.load_model("scores")
        assert plane.repository_index() == [{"name": "scores", "version": "1", "state": "READY", "reason": ""}]

    asyncio.run(body())
