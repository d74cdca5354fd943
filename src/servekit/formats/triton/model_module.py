"""Loading a python backend model.py, with ``triton_python_backend_utils`` given to it alone.

``import triton_python_backend_utils as pb_utils`` in model.py must find servekit's layer
(``servekit.formats.triton.pb_utils``), but no other code may: servekit never installs a
top-level ``triton_python_backend_utils`` and never shadows a real one (a process may hold
Triton's own, e.g. a test beside a real Triton). The choice: each model module runs with its
own ``__builtins__`` whose ``__import__`` answers that one name with the layer and passes
every other import to the real ``__import__``. Python resolves an ``import`` statement
through the builtins of the module executing it, so this covers model.py's top-level
imports and those inside its functions, at load and in every later call, and touches
neither ``sys.modules`` nor the import system's finders: nothing outside model.py sees it.
A helper module that model.py imports from its folder gets the real import system (and so
no layer); Triton models import pb_utils in model.py itself.

``defines_auto_complete`` reads the source without running it, so a config can be read
without importing a model that has no ``auto_complete_config``.
"""

from __future__ import annotations

import ast
import builtins
from pathlib import Path
from types import ModuleType
from typing import Any

from servekit.formats.triton import pb_utils
from servekit.runtimes.modules import import_file

__all__ = ["COMPAT_MODULE", "defines_auto_complete", "load_model_module", "model_class"]

COMPAT_MODULE = "triton_python_backend_utils"
MODEL_CLASS = "TritonPythonModel"


def _scoped_builtins() -> dict[str, Any]:
    real_import = builtins.__import__

    def scoped_import(name: str, globals: Any = None, locals: Any = None,
                      fromlist: Any = (), level: int = 0) -> Any:
        if name == COMPAT_MODULE and level == 0:
            return pb_utils
        return real_import(name, globals, locals, fromlist, level)

    return {**vars(builtins), "__import__": scoped_import}


def load_model_module(path: Path, module_name: str) -> ModuleType:
    """Execute model.py at ``path`` as module ``module_name`` (registered in sys.modules until
    the caller removes it), with its folder importable while it runs."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the python backend's model file does not exist")
    return import_file(path, module_name, namespace={"__builtins__": _scoped_builtins()})


def model_class(module: ModuleType, path: Path) -> type:
    """The module's ``TritonPythonModel`` class."""
    found = getattr(module, MODEL_CLASS, None)
    if not isinstance(found, type):
        raise ImportError(f"{path}: no class {MODEL_CLASS}")
    return found


def defines_auto_complete(path: Path) -> bool:
    """Whether model.py's TritonPythonModel defines auto_complete_config (read, not run)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (OSError, SyntaxError, ValueError):
        return False
    return any(
        isinstance(node, ast.ClassDef) and node.name == MODEL_CLASS
        and any(isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and item.name == "auto_complete_config"
                for item in node.body)
        for node in tree.body
    )
