"""Reading a Triton model folder's config.pbtxt from disk (the I/O beside the pure mapping).

``read_triton_config`` is what servekit's repository calls for a folder holding
config.pbtxt. For a python backend model whose model.py defines ``auto_complete_config``
(judged from its source, without running it), the hook runs first, as Triton runs it before
loading: model.py of the highest version the policy selects is imported for that, with the
pb_utils layer, and dropped again. Models without the hook are never imported here.
"""

from __future__ import annotations

import itertools
import logging
import sys
from pathlib import Path

from servekit.config import ModelConfig
from servekit.formats.triton.autocomplete import complete_with
from servekit.formats.triton.config import to_model_config
from servekit.formats.triton.model_module import defines_auto_complete, load_model_module, model_class
from servekit.formats.triton.pbtxt import DEFAULT_MODEL_FILES, backend_of, completed, parse_pbtxt
from servekit.grpc.generated import model_config_pb2 as pb

__all__ = ["CONFIG_FILE", "read_triton_config", "read_triton_message"]

CONFIG_FILE = "config.pbtxt"

log = logging.getLogger("servekit.formats.triton")
_LOADS = itertools.count()


def read_triton_message(model_dir: Path, version: int | None = None) -> pb.ModelConfig:
    """The folder's config.pbtxt as a message, completed by the model's auto_complete_config
    when it has one (with ``version``'s model file, default: the highest the policy selects).
    Unknown fields are logged as a warning that names them."""
    path = model_dir / CONFIG_FILE
    message, unknown = parse_pbtxt(path.read_text(encoding="utf-8"), str(path))
    if unknown:
        log.warning("%s: skipped fields servekit does not know: %s", path, ", ".join(unknown))
    if backend_of(message) != "python":
        return message
    model_file = _model_file(model_dir, message, version)
    if model_file is None or not defines_auto_complete(model_file):
        return message
    module_name = f"servekit_triton_autocomplete_{next(_LOADS)}"
    try:
        module = load_model_module(model_file, module_name)
        return complete_with(model_class(module, model_file), completed(message, model_dir.name), str(model_file))
    finally:
        sys.modules.pop(module_name, None)


def read_triton_config(model_dir: Path) -> ModelConfig:
    """servekit's ModelConfig for a Triton model folder (see the module docstring)."""
    return to_model_config(read_triton_message(model_dir), str(model_dir / CONFIG_FILE), model_dir.name)


def _model_file(model_dir: Path, message: pb.ModelConfig, version: int | None) -> Path | None:
    file_name = message.default_model_filename or DEFAULT_MODEL_FILES["python"]
    if version is None:
        on_disk = sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())
        policy = to_model_config(message, str(model_dir / CONFIG_FILE), model_dir.name).version_policy
        selected = policy.select(on_disk)
        candidates = [v for v in reversed(selected) if (model_dir / str(v) / file_name).is_file()]
        if not candidates:
            return None
        version = candidates[0]
    return model_dir / str(version) / file_name
