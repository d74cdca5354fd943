"""The custom handler runtime: loads a BaseHandler subclass from the model folder."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Any

import numpy as np

from servekit.handler import BaseHandler, HandlerContext
from servekit.runtimes.base import Arrays, Runtime, imported_torch_gpus
from servekit.runtimes.modules import import_file
from servekit.runtimes.placement import place_instance

__all__ = ["PythonHandlerRuntime", "handler_path", "load_handler_class"]


def handler_path(model_dir: Path, handler: str | None) -> tuple[Path, str | None]:
    """Split 'file.py[:Class]' into the file inside the model folder and the class name."""
    spec = handler or "handler.py"
    file_name, _, class_name = spec.partition(":")
    return model_dir / file_name, (class_name or None)


def load_handler_class(path: Path, class_name: str | None, module_name: str) -> type[BaseHandler]:
    """Import ``path`` and return the named class, or its one BaseHandler subclass."""
    if not path.is_file():
        raise FileNotFoundError(f"handler file {path} does not exist")
    module = import_file(path, module_name)
    if class_name is not None:
        found = getattr(module, class_name, None)
        if not (inspect.isclass(found) and issubclass(found, BaseHandler)):
            raise ImportError(f"{path}: no BaseHandler subclass named {class_name!r}")
        return found
    candidates = [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj) and issubclass(obj, BaseHandler) and obj is not BaseHandler
        and obj.__module__ == module_name
    ]
    if len(candidates) != 1:
        names = ", ".join(c.__name__ for c in candidates) or "none"
        raise ImportError(f"{path}: expected one BaseHandler subclass, found {names}; name it as FILE.py:Class")
    return candidates[0]


class PythonHandlerRuntime(Runtime):
    platform = "python"

    def load(self) -> None:
        ctx = self.context
        path, class_name = handler_path(ctx.model_dir, ctx.config.handler)
        self._module_name = f"servekit_handler_{ctx.model_name}_{ctx.version}_{id(self)}"
        try:
            handler_class = load_handler_class(path, class_name, self._module_name)
        except BaseException:
            sys.modules.pop(self._module_name, None)
            raise
        self.device = place_instance(ctx.config.device, ctx.instance, imported_torch_gpus())
        self._handler = handler_class()
        self._handler.initialize(
            HandlerContext(
                model_name=ctx.model_name,
                version=ctx.version,
                model_dir=ctx.model_dir,
                version_dir=ctx.version_dir,
                device=self.device,
                parameters=dict(ctx.config.parameters),
            )
        )
        outputs = ctx.config.outputs or []
        self._single_output = outputs[0].name if len(outputs) == 1 else None

    def unload(self) -> None:
        sys.modules.pop(self._module_name, None)
        self._handler = None  # type: ignore[assignment]

    def predict(self, inputs: Arrays) -> Arrays:
        result: Any = self._handler.handle(inputs)
        if isinstance(result, np.ndarray) and self._single_output is not None:
            return {self._single_output: result}
        if not isinstance(result, dict):
            raise TypeError(f"handler returned {type(result).__name__}; expected a dict of output name -> array")
        return {name: np.asarray(value) for name, value in result.items()}

