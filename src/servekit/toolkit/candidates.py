"""The candidates ``servekit advise`` measures for one model, by what the model is.

=================  ==========================================================
source             candidates (each at 1 thread and at every core)
=================  ==========================================================
ONNX               ONNX Runtime
TorchScript .pt    TorchScript, ONNX Runtime (converted)
torch.export .pt2  torch.export, ONNX Runtime (converted)
nn.Module          PyTorch eager (reference only), TorchScript (traced), ONNX Runtime
scikit-learn       scikit-learn (its own threads), ONNX Runtime (skl2onnx)
=================  ==========================================================

Conversions go to a temporary folder that lives as long as the :func:`open_candidates` block.
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from servekit.config import ModelConfig, OnnxConfig, parse_model_config
from servekit.toolkit.convert import load_onnx_runtime
from servekit.toolkit.errors import ToolkitError
from servekit.toolkit.measure import Candidate
from servekit.toolkit.specs import Arrays, random_inputs
from servekit.types import TensorSpec, datatype_of

__all__ = ["ModelUnderTest", "open_candidates", "thread_settings"]

_SUFFIXES = (".onnx", ".pt2", ".pt", ".pth", ".torchscript", ".skops", ".joblib", ".pkl", ".py")


@dataclass(slots=True)
class ModelUnderTest:
    path: Path  # the model file
    kind: str  # "onnx" | "torchscript" | "torch_export" | "nn.Module" | "sklearn"
    inputs: list[TensorSpec]
    candidates: list[Candidate] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def thread_settings() -> list[int]:
    """1 thread, and every core this process may use."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return sorted({1, usable})


@contextlib.contextmanager
def open_candidates(path: Path, module: str | None, shapes: Sequence[tuple[int, ...]], datatypes: Sequence[str],
                    trust: bool, threads: Sequence[int]) -> Iterator[ModelUnderTest]:
    """Load the model at ``path`` (a file, a model folder or a version folder) and its candidates."""
    file, shapes = _model_file(path, shapes)
    with tempfile.TemporaryDirectory(prefix="servekit-advise-") as scratch:
        restore: list[Any] = []
        try:
            yield _build(file, module, shapes, datatypes, trust, threads, Path(scratch), restore)
        finally:
            for undo in restore:
                undo()


def _model_file(path: Path, shapes: Sequence[tuple[int, ...]]) -> tuple[Path, Sequence[tuple[int, ...]]]:
    if path.is_file():
        return path, shapes
    if not path.is_dir():
        raise ToolkitError(f"{path}: no such file or folder")
    model_dir = path.parent if path.name.isdigit() else path
    versions = sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())
    if (model_dir / "handler.py").exists():
        raise ToolkitError(f"{model_dir} is a custom handler model: advise measures framework runtimes; measure a"
                           " handler end to end with servekit bench")
    if not versions:
        raise ToolkitError(f"{path}: no model file and no numbered version folder")
    config_path = model_dir / "config.yaml"
    config = parse_model_config(config_path.read_text(encoding="utf-8"), config_path) if config_path.exists() \
        else ModelConfig()
    # The version a client gets by default: the config's default_version, else the highest.
    default = config.default_version if config.default_version in versions else versions[-1]
    version_dir = path if path.name.isdigit() else model_dir / str(default)
    files = sorted(p for p in version_dir.iterdir() if p.is_file() and p.name.endswith(_SUFFIXES))
    if not files:
        raise ToolkitError(f"{version_dir}: no model file ({', '.join(_SUFFIXES)})")
    if not shapes:
        shapes = [(1, *tensor.shape[1:]) for tensor in config.inputs or []]
    return files[0], shapes


def _build(file: Path, module: str | None, shapes: Sequence[tuple[int, ...]], datatypes: Sequence[str], trust: bool,
           threads: Sequence[int], scratch: Path, restore: list[Any]) -> ModelUnderTest:
    if file.suffix == ".onnx":
        target = ModelUnderTest(file, "onnx", [])
        target.inputs = _onnx_candidates(file, "ONNX Runtime", "", threads, target)
        return target
    if file.suffix in (".skops", ".joblib", ".pkl"):
        return _sklearn(file, trust, threads, scratch)
    return _torch(file, module, shapes, datatypes, trust, threads, scratch, restore)


def _onnx_candidates(path: Path, label: str, prepare: str, threads: Sequence[int], target: ModelUnderTest
                     ) -> list[TensorSpec]:
    signature = None
    for count in threads:
        runtime = load_onnx_runtime(path, ModelConfig(onnx=OnnxConfig(intra_op_threads=count)))
        signature = runtime.signature()
        assert signature is not None
        target.candidates.append(Candidate(label, "onnx", count, runtime.predict, list(signature.inputs),
                                           list(signature.outputs), prepare=prepare))
    assert signature is not None
    return list(signature.inputs)


def _sklearn(file: Path, trust: bool, threads: Sequence[int], scratch: Path) -> ModelUnderTest:
    from servekit.toolkit import sklearn_source

    model = sklearn_source.load_sklearn_model(file, trust)
    target = ModelUnderTest(file, "sklearn", model.inputs)
    target.candidates.append(Candidate("scikit-learn", "sklearn", 0,
                                       lambda arrays: sklearn_source.run_sklearn_model(model, arrays), model.inputs))
    try:
        onnx_model, _ = sklearn_source.convert_sklearn(model, None)
    except ToolkitError as exc:
        target.notes.append(f"no ONNX Runtime candidate: {exc}")
        return target
    _onnx_candidates(_save(onnx_model, scratch), "ONNX Runtime", f"servekit convert {file} -o REPO/MODEL", threads,
                     target)
    return target


def _torch(file: Path, module: str | None, shapes: Sequence[tuple[int, ...]], datatypes: Sequence[str], trust: bool,
           threads: Sequence[int], scratch: Path, restore: list[Any]) -> ModelUnderTest:
    try:
        import torch

        from servekit.toolkit import torch_source
    except ModuleNotFoundError as exc:
        raise ToolkitError(f"measuring a PyTorch model needs torch: pip install 'servekit[torch]' ({exc})") from None
    if file.suffix == ".py" and module is None:
        raise ToolkitError(f"{file}: name the model with --module {file}:CLASS")
    model = torch_source.load_torch_model(file, module, shapes, datatypes, trust_pickle=trust)
    kind = {"nn.Module": "nn.Module", "TorchScript": "torchscript", "torch.export": "torch_export"}[model.kind]
    target = ModelUnderTest(file, kind, model.inputs)
    previous = torch.get_num_threads()
    restore.append(lambda: torch.set_num_threads(previous))
    outputs = _output_specs(torch_source.run_torch_model(model, random_inputs(model.inputs, 2, _rng())))

    def add(label: str, runtime: str | None, wrapped: Any, prepare: str = "") -> None:
        def run(arrays: Arrays) -> Arrays:
            return torch_source.run_torch_model(wrapped, arrays)

        for count in threads:
            target.candidates.append(Candidate(label, runtime, count, run, model.inputs, outputs,
                                               enter=functools.partial(torch.set_num_threads, count), prepare=prepare))

    if model.kind == "nn.Module":
        add("PyTorch eager", None, model)
        traced = _trace(model, torch)
        if traced is None:
            target.notes.append("no TorchScript candidate: torch.jit.trace failed on this module")
        else:
            add("TorchScript (traced)", "torchscript", traced,
                prepare="torch.jit.trace(model, example_inputs).save('REPO/MODEL/N/model.pt')")
    else:
        add(model.kind, kind, model)
    try:
        onnx_model, _ = torch_source.export_to_onnx(model, None)
    except ToolkitError as exc:
        target.notes.append(f"no ONNX Runtime candidate: {exc}")
        return target
    convert = f"servekit convert {file} -o REPO/MODEL" + (f" --module {module}" if module else "") + "".join(
        f" --input-shape {','.join(str(d) for d in (1, *spec.shape[1:]))}" for spec in model.inputs)
    _onnx_candidates(_save(onnx_model, scratch), "ONNX Runtime", convert, threads, target)
    return target


def _trace(model: Any, torch: Any) -> Any:
    from servekit.toolkit.torch_source import TorchModel

    example = tuple(torch.from_numpy(array) for array in random_inputs(model.inputs, 2, _rng()).values())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(model.module, example, strict=False, check_trace=False)
    except Exception:
        return None
    return TorchModel("TorchScript", traced, model.inputs, model.output_names)


def _output_specs(outputs: Arrays) -> list[TensorSpec]:
    return [TensorSpec(name, datatype_of(array), (-1, *array.shape[1:])) for name, array in outputs.items()]


def _save(onnx_model: Any, scratch: Path) -> Path:
    path = scratch / "model" / "1" / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(onnx_model.SerializeToString())
    return path


def _rng() -> Any:
    import numpy as np

    return np.random.default_rng(0)
