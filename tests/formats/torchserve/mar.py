"""TorchServe archives for the tests, made by the real ``torch-model-archiver`` around the
TorchServe-style handlers in ``handlers/``, with models made in code."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

HANDLERS = Path(__file__).parent / "handlers"
ANSWERS = Path(__file__).parent / "torchserve_answers.json"
# TinyNet's weights: [1, 2, 3] scores [1 - 3, 0.5 * 6] = [-2, 3]
WEIGHT = [[1.0, 0.0, -1.0], [0.5, 0.5, 0.5]]

_ARCHIVER = "from model_archiver.model_packaging import generate_model_archive; generate_model_archive()"


def _require(module: str, why: str) -> ModuleType:
    """Skip when ``module`` is missing; under CI (scripts/install test installs it) fail instead."""
    try:
        return __import__(module)
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail(f"{module} is missing, but scripts/install test installs it")
        pytest.skip(f"{module} is not installed ({why})")


def require_torch() -> Any:
    return _require("torch", "pip install 'servekit[torch]'")


def require_archiver() -> None:
    _require("model_archiver", "pip install torch-model-archiver")


def archive(export: Path, name: str, handler: str | Path, *, version: str = "1.0", serialized: Path | None = None,
            model_file: Path | None = None, extra: tuple[Path, ...] = (), config: Path | None = None,
            archive_format: str = "default") -> Path:
    """Run the real archiver; returns the archive (``NAME.mar``, ``NAME.tar.gz`` or folder ``NAME``)."""
    require_archiver()
    export.mkdir(parents=True, exist_ok=True)
    args = ["--model-name", name, "--version", version, "--handler", str(handler), "--export-path", str(export),
            "--archive-format", archive_format, "-f"]
    if serialized is not None:
        args += ["--serialized-file", str(serialized)]
    if model_file is not None:
        args += ["--model-file", str(model_file)]
    if extra:
        args += ["--extra-files", ",".join(str(path) for path in extra)]
    if config is not None:
        args += ["--config-file", str(config)]
    done = subprocess.run([sys.executable, "-c", _ARCHIVER, *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    suffix = {"default": ".mar", "tgz": ".tar.gz", "no-archive": ""}[archive_format]
    return export / f"{name}{suffix}"


def tiny_net(torch: Any) -> Any:
    """handlers/model.py's TinyNet with fixed weights (imported from there: one definition)."""
    sys.path.insert(0, str(HANDLERS))
    try:
        import model  # handlers/model.py
    finally:
        sys.path.remove(str(HANDLERS))
        sys.modules.pop("model", None)
    net = model.TinyNet().eval()
    with torch.no_grad():
        net.linear.weight.copy_(torch.tensor(WEIGHT))
        net.linear.bias.zero_()
    return net


def write_torchscript(folder: Path) -> Path:
    torch = require_torch()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiny.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(tiny_net(torch)), str(path))
    return path


def write_state_dict(folder: Path) -> Path:
    torch = require_torch()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiny_state.pth"
    torch.save(tiny_net(torch).state_dict(), str(path))
    return path


def softmax(scores: list[float]) -> list[float]:
    import math

    exps = [math.exp(s - max(scores)) for s in scores]
    return [e / sum(exps) for e in exps]


def recorded_store(store: Path, work: Path) -> Path:
    """The model store TorchServe's answers were recorded with (record_answers.py's ``build``), made
    with the real archiver: tiny.mar, eager.mar, echo.mar, echofn.mar, tinytgz.tar.gz, tinydir/."""
    script, state = write_torchscript(work), write_state_dict(work)
    h = HANDLERS
    archive(store, "tiny", h / "text_handler.py", serialized=script, extra=(h / "index_to_name.json",),
            config=h / "model_config.yaml")
    archive(store, "eager", h / "eager_handler.py", version="2.0", model_file=h / "model.py", serialized=state)
    archive(store, "echo", h / "echo_handler.py", config=h / "model_config.yaml")
    archive(store, "echofn", f"{h / 'echo_handler'}:handle", version="3")
    archive(store, "tinytgz", h / "text_handler.py", serialized=script, archive_format="tgz")
    archive(store, "tinydir", h / "text_handler.py", serialized=script, archive_format="no-archive")
    return store
