"""Whole PyTorch modules saved with ``torch.save(model, "model.pth")``: read only when trusted.

Such a file is a pickle: loading it runs whatever code it names, and it names the module's
class by import path (``net.Net``), so that class must be importable. Both are the user's
call, never servekit's: a pickle loads only with ``trust_pickle: true`` (config.yaml) or
``--trust-pickle`` (``servekit convert``); otherwise the refusal says how, and how to avoid a
pickle altogether (``torch.export`` to a ``.pt2`` file, or ``servekit convert`` to ONNX).

The class is looked up in the model's own folders first (the model folder, then the version
folder): a ``net.py`` there serves the pickle's ``net.Net``, loaded under a name of its own
(two models may each have a ``net.py``) with its folder on ``sys.path`` while it runs, so it
may import its neighbours; anything else comes from the installed packages. A class pickled
from ``__main__`` (defined in the script that saved it) cannot be found again, and the error
says to move it into a file.

``TorchScriptRuntime`` reads a ``.pt`` file that turns out to be such a pickle the same way.
"""

from __future__ import annotations

import itertools
import pickle
import types
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from servekit.errors import ConfigError
from servekit.runtimes.modules import import_file

__all__ = ["is_pickled_module", "load_pickled_module"]

_LOADS = itertools.count()


def is_pickled_module(path: Path) -> bool:
    """A ``torch.save`` file rather than TorchScript: a zip with ``data.pkl`` and no ``constants.pkl``
    (TorchScript archives have both), or not a zip at all (torch's legacy format)."""
    if not zipfile.is_zipfile(path):
        return True
    with zipfile.ZipFile(path) as archive:
        names = {name.rpartition("/")[2] for name in archive.namelist()}
    return "data.pkl" in names and "constants.pkl" not in names


def load_pickled_module(path: Path, folders: Sequence[Path], trusted: bool, how_to_trust: str,
                        map_location: str = "cpu") -> torch.nn.Module:
    """The module pickled in ``path``, in eval mode; ConfigError when not ``trusted`` (the message
    ends with ``how_to_trust``), when its class cannot be found, or when it holds no nn.Module."""
    if not trusted:
        raise ConfigError(
            f"{path}: refusing to unpickle a whole PyTorch module (torch.save): loading it runs whatever code the "
            f"file names. If you made this file or trust where it came from, {how_to_trust}, with the module's "
            "class in a .py file of the model folder (or installed); or save a pickle-free torch.export program "
            "(.pt2), or convert it to ONNX with servekit convert"
        )
    unpickler = _unpickler_for(path, [folder for folder in folders if folder.is_dir()])
    pickle_module = types.SimpleNamespace(Unpickler=unpickler, load=pickle.load, __name__="servekit_torch_pickle")
    try:
        loaded = torch.load(str(path), map_location=map_location, weights_only=False,
                            pickle_module=pickle_module)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"{path}: torch.load failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(loaded, torch.nn.Module):
        hint = " (a state dict: load it into its class and torch.save the module, or use torch.export)" if isinstance(
            loaded, dict) else ""
        raise ConfigError(f"{path}: holds a {type(loaded).__name__}, not a whole nn.Module{hint}")
    return loaded.eval()


def _unpickler_for(path: Path, folders: list[Path]) -> type[pickle.Unpickler]:
    loaded: dict[str, types.ModuleType] = {}

    class ModelFolderUnpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            if module == "__main__":
                raise ConfigError(
                    f"{path}: the pickle names class {name} from __main__ (the script that saved it), which cannot be "
                    f"imported again: move {name} into a file of the model folder (e.g. net.py), import it from there, "
                    "and save the module again"
                )
            local = _local_file(module, folders)
            if local is None:
                try:
                    return super().find_class(module, name)
                except (ModuleNotFoundError, AttributeError) as exc:
                    where = ", ".join(str(folder) for folder in folders) or "the model folder"
                    raise ConfigError(
                        f"{path}: the pickle needs class {name} from module {module}, which is neither installed nor "
                        f"a file in {where} ({exc}); put {module.replace('.', '/')}.py, the file that defines {name}, "
                        "in the model folder"
                    ) from None
            if module not in loaded:
                loaded[module] = import_file(local, f"servekit_torch_pickle_{next(_LOADS)}_{module.replace('.', '_')}")
            target: Any = loaded[module]
            for part in name.split("."):
                target = getattr(target, part)
            return target

    return ModelFolderUnpickler


def _local_file(module: str, folders: list[Path]) -> Path | None:
    relative = Path(*module.split("."))
    for folder in folders:
        for candidate in (folder / relative.with_suffix(".py"), folder / relative / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


