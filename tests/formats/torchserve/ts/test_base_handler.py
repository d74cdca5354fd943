"""ts.torch_handler.base_handler: the default pipeline and model loading, with a Context made by
hand as TorchServe handler unit tests make it."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

from servekit.formats.torchserve.ts.context import Context, RequestProcessor
from servekit.formats.torchserve.ts.metrics.cache import HandlerMetrics
from tests.formats.torchserve.mar import HANDLERS, require_torch, tiny_net


def make_context(model_dir: Path, model: dict[str, str]) -> Context:
    context = Context("tiny", str(model_dir), {"model": {"modelName": "tiny", "handler": "h.py", **model}}, 2, None,
                      "0.12.0", metrics=HandlerMetrics())
    context.request_processor = [RequestProcessor({}), RequestProcessor({})]
    return context


def test_torchscript_default_pipeline_and_label_map(tmp_path: Path) -> None:
    torch = require_torch()
    from servekit.formats.torchserve.ts.torch_handler.base_handler import BaseHandler

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(tiny_net(torch)), str(tmp_path / "tiny.pt"))
    (tmp_path / "index_to_name.json").write_text(json.dumps({"0": "left", "1": "right"}))
    handler = BaseHandler()
    context = make_context(tmp_path, {"serializedFile": "tiny.pt"})
    handler.initialize(context)
    assert handler.initialized and handler.mapping == {"0": "left", "1": "right"}
    assert str(handler.get_device()) == "cpu"
    assert handler.handle([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], context) == [[-2.0, 3.0], [0.0, 0.0]]
    assert {"HandlerTime", "ts_handler_preprocess", "ts_handler_inference", "ts_handler_postprocess"} <= set(
        context.metrics.values)


def test_eager_model_file_without_servekits_runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch = require_torch()
    from servekit.formats.torchserve.ts.torch_handler.base_handler import BaseHandler

    (tmp_path / "model.py").write_text((HANDLERS / "model.py").read_text())
    torch.save(tiny_net(torch).state_dict(), str(tmp_path / "weights.pth"))
    monkeypatch.syspath_prepend(str(tmp_path))  # as on TorchServe: the model folder is on sys.path
    try:
        handler = BaseHandler()
        handler.initialize(make_context(tmp_path, {"serializedFile": "weights.pth", "modelFile": "model.py"}))
        result: Any = handler.inference(torch.tensor([[1.0, 2.0, 3.0]]))
        assert result.tolist() == [[-2.0, 3.0]]
    finally:
        sys.modules.pop("model", None)


def test_no_loadable_weights(tmp_path: Path) -> None:
    require_torch()
    from servekit.formats.torchserve.ts.torch_handler.base_handler import BaseHandler

    with pytest.raises(RuntimeError, match="No model weights"):
        BaseHandler().initialize(make_context(tmp_path, {"serializedFile": "weights.bin"}))


def test_describe_and_explain_requests(tmp_path: Path) -> None:
    require_torch()
    from servekit.formats.torchserve.ts.torch_handler.base_handler import BaseHandler

    context = make_context(tmp_path, {})
    context.request_processor = [RequestProcessor({"describe": "True"})]
    assert BaseHandler().handle([{"body": b""}], context) == [None]  # as recorded: the answer "null"
    context.request_processor = [RequestProcessor({"explain": "True"})]
    handler = BaseHandler()
    handler.preprocess = lambda data: data  # type: ignore[method-assign]
    with pytest.raises(NotImplementedError, match="get_insights"):
        handler.handle([{"body": b""}], context)
