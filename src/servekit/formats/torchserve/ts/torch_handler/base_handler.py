"""``ts.torch_handler.base_handler.BaseHandler``: the default TorchServe handler, for handlers
that subclass it and override some of ``preprocess`` / ``inference`` / ``postprocess``.

``initialize`` loads the archive's ``serializedFile`` onto the device as TorchServe does: with
``modelFile`` given, the one class that file defines is built and the file is read as its
state_dict (eager mode); otherwise a ``.pt`` file is TorchScript and an ``.onnx`` file runs on
onnxruntime. ``index_to_name.json`` in the archive becomes ``self.mapping``. The GPU is used
when the context has a ``gpu_id`` and CUDA is available; XLA, XPU, MPS, IPEX, TensorRT and the
``pt2`` (torch.compile / AOT) options of model_config.yaml are not supported (``pt2`` is
ignored with a warning). Not thread-safe, like TorchServe's: one batch at a time per instance.
"""

from __future__ import annotations

import importlib
import logging
import os
import time
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from servekit.formats.torchserve.ts.handler_utils.timer import timed
from servekit.formats.torchserve.ts.utils.util import list_classes_from_module, load_label_mapping

__all__ = ["BaseHandler"]

log = logging.getLogger("servekit.torchserve")


class BaseHandler:
    """See the module docstring. Attribute names are TorchServe's: handlers read them."""

    def __init__(self) -> None:
        self.model: Any = None
        self.mapping: dict[str, str] | None = None
        self.device: torch.device | None = None
        self.initialized = False
        self.context: Any = None
        self.model_pt_path: str | None = None
        self.manifest: dict[str, Any] | None = None
        self.map_location: str | None = None
        self.explain = False
        self.target = 0
        self.profiler_args: dict[str, Any] = {}
        self.model_yaml_config: Any = {}

    def initialize(self, context: Any) -> None:
        """Pick the device, load the model (see the module docstring) and the label mapping."""
        self.model_yaml_config = getattr(context, "model_yaml_config", None) or {}
        properties = context.system_properties
        gpu_id = properties.get("gpu_id")
        if gpu_id is not None and torch.cuda.is_available():
            self.map_location = "cuda"
            self.device = torch.device(f"cuda:{gpu_id}")
        else:
            self.map_location = "cpu"
            self.device = torch.device("cpu")
        self.manifest = context.manifest
        model_dir = str(properties.get("model_dir"))
        model_section = (self.manifest or {}).get("model", {})
        serialized = model_section.get("serializedFile")
        self.model_pt_path = os.path.join(model_dir, serialized) if serialized else None
        model_file = model_section.get("modelFile", "")
        if model_file:
            self.model = self._load_pickled_model(model_dir, model_file, self.model_pt_path, context)
            self.model.to(self.device)
            self.model.eval()
        elif self.model_pt_path is not None and self.model_pt_path.endswith(".pt"):
            self.model = self._load_torchscript_model(self.model_pt_path)
            self.model.eval()
        elif self.model_pt_path is not None and self.model_pt_path.endswith(".onnx"):
            self.model = _onnx_session(self.model_pt_path, self.map_location)
        else:
            raise RuntimeError("No model weights could be loaded: the archive has no modelFile and its "
                               f"serializedFile ({serialized or 'none'}) is neither .pt nor .onnx")
        if isinstance(self.model_yaml_config, dict) and "pt2" in self.model_yaml_config:
            log.warning("model_config.yaml: pt2 (torch.compile / export) is not supported by servekit; "
                        "the model runs as loaded")
        self.mapping = load_label_mapping(os.path.join(model_dir, "index_to_name.json"))
        self.initialized = True

    def _load_torchscript_model(self, model_pt_path: str) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated upstream
            return torch.jit.load(model_pt_path, map_location=self.device)  # type: ignore[no-untyped-call]

    def _load_pickled_model(self, model_dir: str, model_file: str, model_pt_path: str | None,
                            context: Any = None) -> Any:
        """The one class ``model_file`` defines, built without arguments, with the state_dict
        in ``model_pt_path`` (when given) loaded into it."""
        if not Path(model_dir, model_file).is_file():
            raise RuntimeError(f"Missing the model definition file {model_file}")
        module = _import_model_file(Path(model_file).stem, context)
        classes = list_classes_from_module(module)
        if len(classes) != 1:
            names = ", ".join(cls.__name__ for cls in classes) or "none"
            raise ValueError(f"{model_file} must define exactly one class (the model); it defines {names}")
        model = classes[0]()
        if model_pt_path:
            model.load_state_dict(torch.load(model_pt_path, map_location=self.device))
        return model

    @timed
    def preprocess(self, data: Any) -> Any:
        return torch.as_tensor(data, device=self.device)

    @timed
    def inference(self, data: Any, *args: Any, **kwargs: Any) -> Any:
        with torch.inference_mode():
            return self.model(data.to(self.device), *args, **kwargs)

    @timed
    def postprocess(self, data: Any) -> Any:
        return data.tolist()

    def handle(self, data: list[dict[str, Any]], context: Any) -> Any:
        """preprocess -> inference -> postprocess (or describe / explain when the request asks)."""
        started = time.time()
        self.context = context
        if self._is_describe():
            output: Any = [self.describe_handle()]
        else:
            prepared = self.preprocess(data)
            if self._is_explain():
                output = self.explain_handle(prepared, data)
            else:
                output = self.postprocess(self.inference(prepared))
        if context.metrics is not None:
            context.metrics.add_time("HandlerTime", round((time.time() - started) * 1000, 2), None, "ms")
        return output

    def explain_handle(self, data_preprocess: Any, raw_data: list[dict[str, Any]]) -> Any:
        """Captum-style explanations: a subclass provides ``get_insights(tensor, input, target)``."""
        row = raw_data[0]
        inputs = row.get("data") or row.get("body")
        target = row.get("target") or 0
        get_insights = getattr(self, "get_insights", None)
        if get_insights is None:
            raise NotImplementedError(f"{type(self).__name__} has no get_insights(): it cannot explain")
        return get_insights(data_preprocess, inputs, target)

    def _is_explain(self) -> bool:
        if self.context is not None and self.context.get_request_header(0, "explain") == "True":
            self.explain = True
            return True
        return False

    def _is_describe(self) -> bool:
        return self.context is not None and self.context.get_request_header(0, "describe") == "True"

    def describe_handle(self) -> Any:
        """What a request with the header ``describe: True`` gets; override to say something."""
        return None

    def get_device(self) -> torch.device | None:
        return self.device


def _import_model_file(name: str, context: Any) -> ModuleType:
    importer = getattr(context, "import_archive_module", None)
    if importer is not None:
        module: ModuleType = importer(name)
        return module
    return importlib.import_module(name)  # a Context made by hand, outside servekit's runtime


def _onnx_session(path: str, map_location: str) -> Any:
    import onnxruntime

    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if map_location == "cuda" else [
        "CPUExecutionProvider"]
    return onnxruntime.InferenceSession(path, providers=providers)
