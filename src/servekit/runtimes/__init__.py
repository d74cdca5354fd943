"""Runtimes: one small module per framework, imported only when a model needs it."""

from __future__ import annotations

import importlib
from pathlib import Path

from servekit.runtimes.base import Arrays, Runtime, RuntimeContext, Signature

__all__ = ["Arrays", "Runtime", "RuntimeContext", "Signature", "create_runtime", "detect_runtime", "runtime_for_file"]

# runtime name -> (module, class, the pip extra that provides its framework)
_RUNTIMES: dict[str, tuple[str, str, str | None]] = {
    "onnx": ("servekit.runtimes.onnx", "OnnxRuntime", "onnx"),
    "torchscript": ("servekit.runtimes.torch", "TorchScriptRuntime", "torch"),
    "torch_export": ("servekit.runtimes.torch", "TorchExportRuntime", "torch"),
    "torch_pickle": ("servekit.runtimes.torch", "TorchPickleRuntime", "torch"),
    "sklearn": ("servekit.runtimes.sklearn", "SklearnRuntime", "sklearn"),
    "python": ("servekit.runtimes.python", "PythonHandlerRuntime", None),
    "torchserve": ("servekit.formats.torchserve.runtime", "TorchServeRuntime", None),
    "triton_python": ("servekit.formats.triton.python_backend", "TritonPythonRuntime", None),
}
# top-level packages each extra installs: only their absence means "install the extra"
_EXTRA_PACKAGES = {"onnx": {"onnxruntime"}, "torch": {"torch"}, "sklearn": {"sklearn", "skops"}}
# what to install, per extra, in the message of a model whose framework is missing
_INSTALL_HINTS = {"onnx": "pip install 'servekit[onnx]' (or 'servekit[onnx-gpu]' for CUDA)"}

# file suffix in a version folder -> runtime name, checked in this order
_SUFFIXES: tuple[tuple[str, str], ...] = (
    (".onnx", "onnx"),
    (".pt2", "torch_export"),
    (".pt", "torchscript"),
    (".torchscript", "torchscript"),
    (".pth", "torch_pickle"),
    (".skops", "sklearn"),
    (".joblib", "sklearn"),
    (".pkl", "sklearn"),
)


def runtime_for_file(name: str) -> str | None:
    """The runtime that serves a model file of this name (by its suffix), or None."""
    return next((runtime for suffix, runtime in _SUFFIXES if name.endswith(suffix)), None)


def detect_runtime(version_dir: Path, has_handler: bool) -> str:
    """Which runtime serves a version folder, judged by its files.

    A model with a handler is served by the python runtime whatever else lies there:
    the handler decides how to load those files.
    """
    if has_handler:
        return "python"
    names = [p.name for p in version_dir.iterdir() if p.is_file()] if version_dir.is_dir() else []
    for suffix, runtime in _SUFFIXES:
        if any(name.endswith(suffix) for name in names):
            return runtime
    raise FileNotFoundError(
        f"{version_dir}: cannot tell the runtime: no model file ({', '.join(s for s, _ in _SUFFIXES)})"
        " and no handler; set 'runtime' in config.yaml"
    )


def create_runtime(name: str, context: RuntimeContext, *, isolated: bool = False) -> Runtime:
    """Instantiate a runtime by name, with a clear error when its extra is not installed.
    ``isolated``: a runtime that runs it in a process of its own (servekit.runtimes.isolated),
    which imports the framework there, not here."""
    if isolated:
        if name not in _RUNTIMES:
            raise KeyError(name)
        from servekit.runtimes.isolated import IsolatedRuntime

        return IsolatedRuntime(context, name)
    module_name, class_name, extra = _RUNTIMES[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").partition(".")[0]
        if extra is None or missing not in _EXTRA_PACKAGES[extra]:
            raise
        hint = _INSTALL_HINTS.get(extra, f"pip install 'servekit[{extra}]'")
        raise RuntimeError(f"runtime {name!r} needs the '{extra}' extra: {hint} ({exc})") from None
    runtime_class: type[Runtime] = getattr(module, class_name)
    return runtime_class(context)
