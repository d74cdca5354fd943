"""PythonHandlerRuntime: finding the handler class, running the three hooks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from servekit.config import ModelConfig, TensorConfig
from servekit.runtimes import Runtime, RuntimeContext, create_runtime

DOUBLER = """
import numpy as np
from servekit.handler import BaseHandler


class Doubler(BaseHandler):
    def initialize(self, context):
        super().initialize(context)
        self.factor = float(context.parameters.get("factor", 2.0))
        self.offset = float(np.load(context.version_dir / "offset.npy"))

    def preprocess(self, inputs):
        return inputs["x"].astype(np.float64)

    def inference(self, data):
        return data * self.factor + self.offset

    def postprocess(self, data):
        return {"y": data, "rows": np.arange(len(data), dtype=np.int64)}
"""


def _model(model_dir: Path, source: str, file_name: str = "handler.py") -> None:
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    np.save(model_dir / "1" / "offset.npy", np.array(0.5))
    (model_dir / file_name).write_text(source)


def _runtime(model_dir: Path, config: ModelConfig) -> Runtime:
    context = RuntimeContext("handled", 1, model_dir, model_dir / "1", config=config)
    runtime = create_runtime("python", context)
    runtime.load()
    return runtime


def test_handler_hooks_run_in_order_with_context_and_parameters(tmp_path: Path) -> None:
    _model(tmp_path, DOUBLER)
    runtime = _runtime(tmp_path, ModelConfig(device="cpu", parameters={"factor": 3}))
    assert runtime.signature() is None
    outputs = runtime.predict({"x": np.array([[1.0], [2.0]], dtype=np.float32)})
    np.testing.assert_allclose(outputs["y"], [[3.5], [6.5]])
    np.testing.assert_array_equal(outputs["rows"], [0, 1])
    assert runtime.device == "cpu"


def test_handler_named_file_and_class(tmp_path: Path) -> None:
    source = DOUBLER + "\n\nclass Tripler(Doubler):\n    pass\n"
    _model(tmp_path, source, file_name="serve.py")
    runtime = _runtime(tmp_path, ModelConfig(handler="serve.py:Tripler"))
    assert runtime.predict({"x": np.ones((1, 1))})["y"].tolist() == [[2.5]]


def test_single_declared_output_accepts_a_bare_array(tmp_path: Path) -> None:
    source = (
        "from servekit.handler import BaseHandler\n\n"
        "class Negate(BaseHandler):\n"
        "    def inference(self, data):\n"
        "        return -data['x']\n"
    )
    _model(tmp_path, source)
    config = ModelConfig(outputs=[TensorConfig(name="negated", datatype="FP32", shape=[-1, 2])])
    outputs = _runtime(tmp_path, config).predict({"x": np.array([[1.0, -2.0]], dtype=np.float32)})
    assert list(outputs) == ["negated"]
    np.testing.assert_array_equal(outputs["negated"], [[-1.0, 2.0]])


def test_missing_handler_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "1").mkdir()
    with pytest.raises(FileNotFoundError, match=r"handler file .*handler\.py does not exist"):
        _runtime(tmp_path, ModelConfig())


def test_two_handler_classes_without_a_name_is_an_error(tmp_path: Path) -> None:
    _model(tmp_path, DOUBLER + "\n\nclass Other(BaseHandler):\n    pass\n")
    with pytest.raises(ImportError, match="expected one BaseHandler subclass, found Doubler, Other"):
        _runtime(tmp_path, ModelConfig())


def test_named_class_that_is_not_a_handler_is_an_error(tmp_path: Path) -> None:
    _model(tmp_path, DOUBLER + "\n\nclass Plain:\n    pass\n")
    with pytest.raises(ImportError, match="no BaseHandler subclass named 'Plain'"):
        _runtime(tmp_path, ModelConfig(handler="handler.py:Plain"))


def test_handler_returning_a_list_is_rejected(tmp_path: Path) -> None:
    source = (
        "from servekit.handler import BaseHandler\n\n"
        "class Listy(BaseHandler):\n"
        "    def inference(self, data):\n"
        "        return [1, 2]\n"
    )
    _model(tmp_path, source)
    runtime = _runtime(tmp_path, ModelConfig())
    with pytest.raises(TypeError, match="expected a dict of output name -> array"):
        runtime.predict({"x": np.ones((2, 1))})
