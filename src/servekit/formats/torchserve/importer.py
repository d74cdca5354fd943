"""How a TorchServe handler's imports are resolved: its ``ts`` and its archive's own modules.

TorchServe runs each worker as its own Python process with the unpacked archive on
``sys.path`` and its ``ts`` package installed, so a handler writes ``from
ts.torch_handler.base_handler import BaseHandler`` and ``from model import Net`` (a file of
the archive). servekit serves many models in one process, so neither may become global: a
top-level ``ts`` package installed for everyone would shadow a real one (TorchServe itself,
or an unrelated package of that name), and two archives that both ship ``model.py`` would
collide in ``sys.modules``.

The choice: each loaded archive gets an ``ArchiveImports`` scope, and every module of the
archive runs with a private ``__builtins__`` whose ``__import__`` is the scope's.

- ``import ts...`` in archive code resolves to ``servekit.formats.torchserve.ts...``; a ``ts``
  module servekit does not provide fails with a ModuleNotFoundError naming it. Nothing named
  ``ts`` ever enters ``sys.modules``: outside archive code ``import ts`` finds what is
  installed, or nothing.
- ``import NAME`` where the archive has ``NAME.py`` or ``NAME/__init__.py`` loads that file as
  ``_servekit_mar_<token>.NAME`` (a private package per scope whose ``__path__`` is the
  archive folder): archives never collide, and the archive wins over an installed package of
  the same name, as in TorchServe, where the archive comes first on ``sys.path``.
- Everything else is the ordinary import.

Why not a meta-path finder that maps ``ts`` while the handler loads: a handler's lazy imports
(``from ts.utils.util import map_class_to_label`` inside ``postprocess``) run on every request,
after loading, and often on several instance threads at once, so a finder switched on and off
around loading would miss them, and one left on would be global again. ``__builtins__`` is
captured by every function when it is defined, so lazy imports inside any function or class of
an archive module, at any time and on any thread, go through the same scope, with no global
state to switch. Submodules of archive packages (``from .tokenizer import X``) are loaded by
one small meta-path finder that claims only names under the ``_servekit_mar_`` prefix (so it
can give those modules the scope's builtins too), and never any other name.

Limits: ``importlib.import_module("ts...")`` and ``import ts`` inside installed third-party
code do not go through the scope (they see the real ``sys.modules``); a file the archive
imports is never compiled to ``__pycache__`` (the unpacked folder is never written to); and the
handler's working directory is the server's, not the archive folder as in TorchServe, so
files are best opened by ``context.system_properties["model_dir"]``.
"""

from __future__ import annotations

import builtins
import importlib
import importlib.abc
import importlib.machinery
import sys
import threading
import types
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["COMPAT_PACKAGE", "PRIVATE_PREFIX", "ArchiveImports"]

COMPAT_PACKAGE = "servekit.formats.torchserve.ts"
PRIVATE_PREFIX = "_servekit_mar_"

_real_import = builtins.__import__
_scopes: dict[str, ArchiveImports] = {}  # private package name -> its scope
_finder_lock = threading.Lock()


class ArchiveImports:
    """The import scope of one loaded archive (see the module docstring). ``open`` before
    loading anything from it; ``close`` drops every module it loaded from ``sys.modules``."""

    def __init__(self, archive_dir: Path) -> None:
        self.archive_dir = archive_dir.resolve()
        self.package = f"{PRIVATE_PREFIX}{uuid.uuid4().hex}"
        self.builtins: dict[str, Any] = dict(vars(builtins))
        self.builtins["__import__"] = self._import
        self._local: dict[str, bool] = {}

    def open(self) -> None:
        _install_finder()
        package = types.ModuleType(self.package, f"servekit's private package for the archive in {self.archive_dir}")
        package.__path__ = [str(self.archive_dir)]
        package.__package__ = self.package
        package.__spec__ = importlib.machinery.ModuleSpec(self.package, None, is_package=True)
        package.__spec__.submodule_search_locations = [str(self.archive_dir)]
        _scopes[self.package] = self
        sys.modules[self.package] = package

    def close(self) -> None:
        _scopes.pop(self.package, None)
        for name in [n for n in sys.modules if n == self.package or n.startswith(self.package + ".")]:
            del sys.modules[name]

    def has_module(self, name: str) -> bool:
        """Whether ``name`` (a top-level module name) is a module file or package of the archive."""
        known = self._local.get(name)
        if known is None:
            known = name.isidentifier() and ((self.archive_dir / f"{name}.py").is_file()
                                             or (self.archive_dir / name / "__init__.py").is_file())
            self._local[name] = known
        return known

    def import_module(self, name: str) -> types.ModuleType:
        """The archive's module ``name`` (dotted for a package's submodule), loaded in this scope."""
        return importlib.import_module(f"{self.package}.{name}")

    def _import(self, name: str, globals: Mapping[str, Any] | None = None, locals: Mapping[str, Any] | None = None,
                fromlist: Sequence[str] | None = (), level: int = 0) -> types.ModuleType:
        if level == 0:
            top = name.partition(".")[0]
            if top == "ts":
                return _import_compat(name, fromlist)
            if self.has_module(top):
                module: types.ModuleType = _real_import(f"{self.package}.{name}", None, None, fromlist, 0)
                return module if fromlist else sys.modules[f"{self.package}.{top}"]
        imported: types.ModuleType = _real_import(name, globals, locals, fromlist, level)
        return imported


def _import_compat(name: str, fromlist: Sequence[str] | None) -> types.ModuleType:
    """``ts[.x]`` as servekit's compatibility package; ``import ts.x`` binds the package itself."""
    target = COMPAT_PACKAGE + name[len("ts"):]
    try:
        module: types.ModuleType = _real_import(target, None, None, fromlist, 0)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing.startswith(COMPAT_PACKAGE):
            asked = "ts" + missing[len(COMPAT_PACKAGE):]
            raise ModuleNotFoundError(
                f"No module named {asked!r}: servekit's TorchServe layer provides ts.context, "
                "ts.torch_handler.base_handler, ts.utils.util, ts.metrics and ts.handler_utils.timer, not "
                f"{asked} (import it only when TorchServe itself serves the handler)", name=asked) from None
        raise
    return module if fromlist else sys.modules[COMPAT_PACKAGE]


class _ScopedLoader(importlib.machinery.SourceFileLoader):
    """Runs an archive file with its scope's builtins, and never writes bytecode next to it."""

    def __init__(self, fullname: str, path: str, scope_builtins: dict[str, Any]) -> None:
        super().__init__(fullname, path)
        self._builtins = scope_builtins

    def exec_module(self, module: types.ModuleType) -> None:
        module.__dict__["__builtins__"] = self._builtins
        super().exec_module(module)

    def set_data(self, path: str, data: Any, *, _mode: int = 0o666) -> None:
        """Bytecode caching writes here: the unpacked archive stays as it was unpacked."""


class _ArchiveFinder(importlib.abc.MetaPathFinder):
    """Finds ``_servekit_mar_<token>.NAME`` in its archive folder; claims no other name."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: types.ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith(PRIVATE_PREFIX):
            return None
        scope = _scopes.get(fullname.partition(".")[0])
        if scope is None or path is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and isinstance(spec.loader, importlib.machinery.SourceFileLoader) and spec.origin:
            spec.loader = _ScopedLoader(fullname, spec.origin, scope.builtins)
        return spec


def _install_finder() -> None:
    with _finder_lock:
        if not any(isinstance(finder, _ArchiveFinder) for finder in sys.meta_path):
            # First: the standard path finder would otherwise load archive files without the scope.
            sys.meta_path.insert(0, _ArchiveFinder())
