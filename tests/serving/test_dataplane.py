from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from servekit.errors import InvalidInput, ModelNotFound, ModelNotReady
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


def _plane_with(tmp_path: Path, extra: str) -> DataPlane:
    (tmp_path / "scores" / "1").mkdir(parents=True)
    (tmp_path / "scores" / "handler.py").write_text(HANDLER)
    (tmp_path / "scores" / "config.yaml").write_text(CONFIG + extra)
    registry = Registry(tmp_path)
    asyncio.run(registry.load_all())
    return DataPlane(registry)


def test_any_input_takes_the_only_input_whatever_its_name_and_numeric_datatype(tmp_path: Path) -> None:
    plane = _plane_with(tmp_path, "any_input: true\n")
    rows = np.array([[1, 2], [3, 4]], dtype=np.int64)
    response = asyncio.run(plane.infer(InferenceRequest("scores", [Tensor("pixels", "INT64", (2, 2), rows)])))
    assert response.outputs[0].data.ravel().tolist() == [3.0, 7.0]
    with pytest.raises(InvalidInput, match="model 'scores' takes exactly one input; the request has 2"):
        asyncio.run(plane.infer(InferenceRequest("scores", [Tensor("a", "INT64", (2, 2), rows),
                                                            Tensor("b", "INT64", (2, 2), rows)])))
    with pytest.raises(InvalidInput, match=r"input 'pixels' has shape \[4\]; the model expects \[-1, 2\]"):
        asyncio.run(plane.infer(InferenceRequest("scores", [Tensor("pixels", "INT64", (4,), rows.ravel())])))
    strings = np.array([b"a", b"b"], dtype=object).reshape(1, 2)
    with pytest.raises(InvalidInput, match="input 'pixels' has datatype BYTES; the model expects FP32"):
        asyncio.run(plane.infer(InferenceRequest("scores", [Tensor("pixels", "BYTES", (1, 2), strings)])))


def test_without_any_input_the_input_is_matched_by_name(plane: DataPlane) -> None:
    rows = np.array([[1, 2]], dtype=np.float32)
    with pytest.raises(InvalidInput, match="model 'scores' has no input named 'pixels'"):
        asyncio.run(plane.infer(InferenceRequest("scores", [Tensor("pixels", "FP32", (1, 2), rows)])))


def test_default_outputs_are_what_a_request_naming_none_gets(tmp_path: Path) -> None:
    plane = _plane_with(tmp_path, "default_outputs: [name]\n")
    rows = np.array([[1, 2]], dtype=np.float32)
    response = asyncio.run(plane.infer(InferenceRequest("scores", [Tensor("x", "FP32", (1, 2), rows)])))
    assert [output.name for output in response.outputs] == ["name"]


@pytest.mark.parametrize(("extra", "said"), [
    ("default_outputs: [label]\ninputs: [{name: x, datatype: FP32, shape: [-1, 2]}]\n",
     "default_outputs: the model has no output named label"),
    ("any_input: true\ninputs: [{name: x, datatype: FP32, shape: [-1, 2]}, {name: y, datatype: FP32, shape: [-1]}]\n",
     "any_input: the model has 2 inputs; any_input needs exactly one"),
    ("table_input: on_request\ninputs: [{name: x, datatype: FP32, shape: [-1, 2]}]\n",
     "table_input: only the sklearn runtime reads tables; this model runs on python"),
])
def test_a_config_that_cannot_hold_is_refused_at_load(tmp_path: Path, extra: str, said: str) -> None:
    (tmp_path / "scores" / "1").mkdir(parents=True)
    (tmp_path / "scores" / "handler.py").write_text(HANDLER)
    (tmp_path / "scores" / "config.yaml").write_text(CONFIG.replace("inputs: [{name: x, datatype: FP32, shape: "
                                                                    "[-1, 2]}]\n", "") + extra)
    registry = Registry(tmp_path)
    asyncio.run(registry.load_all())
    row = next(row for row in registry.index() if row["name"] == "scores")
    assert row["state"] == "UNAVAILABLE" and said in row["reason"]
