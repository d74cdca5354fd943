"""Import a user's Python file (a handler, a python-backend model.py, the module of a pickled
torch model, a --module for convert) as a module of its own: one place for the rules they share."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["import_file"]


def import_file(path: Path, module_name: str, *, namespace: Mapping[str, Any] | None = None) -> ModuleType:
    """Execute the file at ``path`` as module ``module_name`` and return it. The module is
    registered in ``sys.modules`` (pickle, dataclasses and torch's tracers look classes' modules
    up there) and unregistered again if it raises; its folder is importable while it runs, so
    it may import its neighbours. ``namespace``: names set in the module before it runs (e.g. a
    scoped ``__builtins__``). A missing file is FileNotFoundError, an unloadable one ImportError."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    module.__dict__.update(namespace or {})
    sys.modules[module_name] = module
    folder = str(path.parent.resolve())
    sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    finally:
        sys.path.remove(folder)
    return module
