"""One model file served as a one-model repository: ``servekit serve model.onnx``.

A file (``.onnx``, ``.pt``/``.torchscript``, ``.pt2``, ``.skops``, ``.joblib``/``.pkl``) or a
custom handler (``handler.py`` or ``handler.py:MyHandler``) becomes a temporary repository
folder holding one model, so the registry, the runtimes and every transport serve it exactly as
they serve a model folder (with several workers too: they read the same folder):

    <tmp>/NAME/config.yaml     what the command line gave (max_batch_size, inputs, outputs, handler)
    <tmp>/NAME/1/FILE          a symbolic link to the file (a copy where links are refused)

The name is the file's stem unless given. What the runtime can tell from the file (ONNX,
torch.export programs and scikit-learn estimators describe their tensors) is left to it; a
handler cannot, so its inputs and outputs come from the caller (``--input x:FP32:-1,4``), nor
can a TorchScript file, whose inputs come from the caller and whose outputs the runtime learns
from one run on zeros unless given. The caller removes the folder when the server stops (``remove``).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from servekit.config import ModelConfig, TensorConfig
from servekit.errors import ConfigError
from servekit.runtimes import runtime_for_file
from servekit.serving.entry import valid_model_name

__all__ = ["SingleModel", "is_single_model", "parse_tensor", "remove", "single_model", "write_repository"]


@dataclass(frozen=True, slots=True)
class SingleModel:
    """One model file (or handler) to serve, and what the caller said about it."""

    path: Path
    runtime: str
    name: str
    config: ModelConfig
    handler_class: str | None = None


def _handler_parts(source: str) -> tuple[Path, str | None] | None:
    """``FILE.py[:Class]`` split, or None when ``source`` names no Python file."""
    if source.endswith(".py"):
        return Path(source), None
    file_part, colon, class_name = source.rpartition(":")
    if colon and file_part.endswith(".py") and class_name.isidentifier():
        return Path(file_part), class_name
    return None


def is_single_model(source: str | Path) -> bool:
    """Whether ``source`` names one model file or handler (else: a repository folder)."""
    text = str(source)
    if _handler_parts(text) is not None:
        return True
    path = Path(text)
    return path.is_file() or (not path.is_dir() and runtime_for_file(path.name) is not None)


def parse_tensor(text: str) -> TensorConfig:
    """``NAME:DATATYPE:DIMS`` (``x:FP32:-1,4``; -1 = any size, the first the batch) -> a TensorConfig."""
    parts = text.split(":")
    if len(parts) != 3 or not parts[0] or not parts[2]:
        raise ConfigError(f"{text!r}: expected NAME:DATATYPE:DIMS, e.g. x:FP32:-1,4")
    name, datatype, dims = parts
    try:
        shape = [int(dim) for dim in dims.split(",")]
    except ValueError:
        raise ConfigError(f"{text!r}: DIMS must be comma-separated integers (-1 for any size)") from None
    try:
        return TensorConfig(name=name, datatype=datatype.upper(), shape=shape)
    except ValidationError as exc:
        raise ConfigError(f"{text!r}: {exc.errors()[0]['msg']}") from None


def single_model(source: str | Path, *, name: str | None = None, max_batch_size: int | None = None,
                 inputs: Sequence[TensorConfig] = (), outputs: Sequence[TensorConfig] = (),
                 **config: Any) -> SingleModel:
    """Check ``source`` and the caller's settings; ConfigError says what is wrong in one line.
    ``config``: any other ModelConfig field (``instances``, ``batching``, ``parameters``, ...)."""
    text = str(source)
    handler = _handler_parts(text)
    if handler is not None:
        path, handler_class = handler
        runtime = "python"
    else:
        path, handler_class = Path(text), None
        found = runtime_for_file(path.name)
        if found is None:
            raise ConfigError(f"{path} is not a folder (a model repository), nor a model file servekit serves "
                              "(.onnx, .pt, .torchscript, .pt2, .skops, .joblib, .pkl), nor a handler (FILE.py or "
                              "FILE.py:Class)")
        runtime = found
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    chosen = name if name is not None else path.name.partition(".")[0]
    if not valid_model_name(chosen):
        raise ConfigError(f"{chosen!r} is not a model name (a plain folder name, not starting with . or _); "
                          "give one with --name")
    if runtime == "python" and not (inputs and outputs):
        raise ConfigError(f"{path}: a handler cannot describe its tensors; declare them with --input and --output "
                          "NAME:DATATYPE:DIMS (e.g. --input x:FP32:-1,4 --output y:FP32:-1,2)")
    if runtime == "torchscript" and not inputs:
        raise ConfigError(f"{path}: a TorchScript file cannot describe its tensors; declare its inputs with --input "
                          "NAME:DATATYPE:DIMS (e.g. --input x:FP32:-1,4; its outputs are learnt from one run on "
                          "zeros, or give --output)")
    fields: dict[str, Any] = {**config, "runtime": runtime}
    if max_batch_size is not None:
        fields["max_batch_size"] = max_batch_size
    if inputs:
        fields["inputs"] = [tensor.model_dump() for tensor in inputs]
    if outputs:
        fields["outputs"] = [tensor.model_dump() for tensor in outputs]
    if runtime == "python":
        fields["handler"] = f"{path.resolve()}{':' + handler_class if handler_class else ''}"
    try:
        model_config = ModelConfig.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}"
                             for err in exc.errors())
        raise ConfigError(f"{chosen}: {problems}") from None
    return SingleModel(path=path, runtime=runtime, name=chosen, config=model_config, handler_class=handler_class)


def write_repository(model: SingleModel, parent: Path | None = None) -> Path:
    """A fresh folder (under ``parent``, else the system's temporary folder) holding ``model`` as a
    one-model repository; returns it. The caller removes it (``remove``) once served."""
    root = Path(tempfile.mkdtemp(prefix="servekit-", dir=parent))
    folder = root / model.name
    version = folder / "1"
    version.mkdir(parents=True)
    if model.runtime != "python":  # a handler is named by its absolute path in the config
        link = version / model.path.name
        try:
            link.symlink_to(model.path.resolve())
        except OSError:  # a file system without symbolic links
            shutil.copy2(model.path, link)
    config = model.config.model_dump(exclude_defaults=True, mode="json")
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return root


def remove(root: Path) -> None:
    """Remove a folder ``write_repository`` made (the model file itself is never touched: it is linked)."""
    shutil.rmtree(root, ignore_errors=True)
