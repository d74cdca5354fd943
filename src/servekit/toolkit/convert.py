"""``servekit convert``: a PyTorch or scikit-learn model -> an ONNX version folder servekit serves.

The guarantees: the ONNX model has a dynamic batch dimension, passes ``onnx.checker``, loads
in servekit's own ONNX runtime, and answers like its source on random and user-given inputs
within the tolerance (see :mod:`servekit.toolkit.parity`). Only then is anything written to
the repository: ``MODEL/N/model.onnx``, and ``MODEL/config.yaml`` when the model has none yet.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from servekit.config import ModelConfig, parse_model_config
from servekit.errors import ServekitError
from servekit.runtimes import Runtime, RuntimeContext, Signature, create_runtime
from servekit.toolkit.console import Steps
from servekit.toolkit.errors import ParityError, ToolkitError
from servekit.toolkit.model_config import render_config, tensor_entries, write_config
from servekit.toolkit.onnx_tools import check_model, name_batch_dims
from servekit.toolkit.parity import ParityReport
from servekit.toolkit.specs import Arrays, batch_of, load_samples, random_inputs

__all__ = ["ConvertOptions", "ConvertResult", "convert_model", "load_onnx_runtime"]

_TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".torchscript", ".ts", ".jit")
_MODEL_FILES = (".onnx", ".pt", ".pt2", ".torchscript", ".skops", ".joblib", ".pkl")
# Random cases of the parity check: one row, and a few rows to exercise the dynamic batch.
_RANDOM_BATCHES = (1, 3)


@dataclass(frozen=True, slots=True)
class ConvertOptions:
    source: Path
    destination: Path  # REPO/MODEL
    version: int | None = None  # default: one past the highest version there
    input_shapes: tuple[tuple[int, ...], ...] = ()
    input_datatypes: tuple[str, ...] = ()
    input_names: tuple[str, ...] = ()  # default: those of the source's config.yaml, else the module's own
    output_names: tuple[str, ...] = ()
    module: str | None = None  # FILE.py:NAME for an nn.Module
    tolerance: float = 1e-4
    samples: Path | None = None  # .npy / .npz inputs for the parity check
    opset: int | None = None
    trust: bool = False  # read pickles (joblib, a torch.save-d module), and skops types skops does not trust
    overwrite: bool = False  # replace an existing version folder's model
    max_batch_size: int = 32


@dataclass(slots=True)
class ConvertResult:
    model_path: Path
    config_path: Path
    config_written: bool
    version: int
    source_kind: str
    exporter: str
    opset: int
    signature: Signature
    parity: ParityReport
    notes: list[str] = field(default_factory=list)


def convert_model(options: ConvertOptions, steps: Steps | None = None) -> ConvertResult:
    """Convert, check and write; ToolkitError (ParityError for numbers) leaves the repository untouched."""
    steps = steps or Steps(5)
    version = _version_to_write(options)
    with steps.step(f"load {options.source}"):
        source = _load_source(options)
    steps.note(f"{source.kind}; inputs " + ", ".join(f"{s.name} {s.datatype} {list(s.shape)}" for s in source.inputs))
    with steps.step("export to ONNX"):
        model, exporter = source.export(options.opset)
        name_batch_dims(model, [spec.name for spec in source.inputs])
    opset = next(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx"))
    steps.note(f"{exporter}, opset {opset}")
    with steps.step("check with onnx.checker"):
        check_model(model)
    with tempfile.TemporaryDirectory(prefix="servekit-convert-") as staging:
        staged = Path(staging) / "model" / "1" / "model.onnx"
        staged.parent.mkdir(parents=True)
        staged.write_bytes(model.SerializeToString())
        with steps.step(f"compare with the source (tolerance {options.tolerance:g})"):
            runtime = load_onnx_runtime(staged)
            parity = _check_parity(source, runtime, options)
        for line in parity.lines():
            steps.note(line)
        if not parity.passed:
            raise ParityError(
                f"parity check failed: the ONNX model differs from {options.source} past --tolerance"
                f" {options.tolerance:g} on {', '.join(parity.cases)}:\n  " + "\n  ".join(parity.lines())
                + "\nnothing was written"
            )
        with steps.step(f"write {options.destination}/{version}"):
            result = _write(options, version, staged, runtime.signature(), source.kind, exporter, opset, parity)
        runtime.unload()
    return result


def load_onnx_runtime(path: Path, config: ModelConfig | None = None) -> Runtime:
    """servekit's own ONNX runtime on the model file at ``path`` (its folder is the version folder)."""
    version_dir = path.parent
    context = RuntimeContext(version_dir.parent.name, 1, version_dir.parent, version_dir, config or ModelConfig())
    runtime = create_runtime("onnx", context)
    try:
        runtime.load()
    except Exception as exc:
        raise ToolkitError(f"onnxruntime cannot load the converted model: {exc}") from None
    return runtime


@dataclass(slots=True)
class _Source:
    """A loaded source, whichever framework: its specs, a reference run, an exporter."""

    kind: str
    inputs: list[Any]
    run: Any  # Callable[[Arrays], Arrays]
    export: Any  # Callable[[int | None], tuple[ModelProto, str]]
    given_batch: int = 1


def _load_source(options: ConvertOptions) -> _Source:
    source = options.source
    if not source.exists():
        raise ToolkitError(f"{source}: no such file")
    from servekit.toolkit.sklearn_source import SKLEARN_SUFFIXES

    if source.suffix in SKLEARN_SUFFIXES:
        return _sklearn_source(options)
    if source.suffix == ".onnx":
        raise ToolkitError(f"{source} is ONNX already: copy it to {options.destination}/N/model.onnx to serve it")
    if source.suffix not in (".pt2", ".py", *_TORCHSCRIPT_SUFFIXES):
        raise ToolkitError(f"{source}: cannot tell the framework from the file name; expected .pt/.pth (TorchScript,"
                           " a whole module from torch.save with --trust-pickle, or a state dict with --module), .pt2"
                           " (torch.export), .py with --module, or .skops")
    if source.suffix == ".py" and options.module is None:
        raise ToolkitError(f"{source}: name the model with --module {source}:CLASS")
    try:
        from servekit.toolkit import torch_source
    except ModuleNotFoundError as exc:
        raise ToolkitError(f"converting a PyTorch model needs torch: pip install 'servekit[torch]' ({exc})") from None
    declared = _declared_config(source) or ModelConfig()
    declared_inputs = declared.inputs or []
    # A .pt2 knows its own shapes and dtypes; the config only names its tensors.
    shapes = options.input_shapes or tuple((1, *t.shape[1:]) for t in declared_inputs if source.suffix != ".pt2")
    datatypes = options.input_datatypes or tuple(t.datatype for t in declared_inputs if source.suffix != ".pt2")
    model = torch_source.load_torch_model(
        source, options.module, shapes, datatypes,
        options.output_names or tuple(t.name for t in declared.outputs or []),
        options.input_names or tuple(t.name for t in declared_inputs), trust_pickle=options.trust,
    )
    return _Source(
        model.kind, model.inputs, lambda arrays: torch_source.run_torch_model(model, arrays),
        lambda opset: torch_source.export_to_onnx(model, opset),
        given_batch=batch_of(options.input_shapes[0]) if options.input_shapes else 1,
    )


def _declared_config(source: Path) -> ModelConfig | None:
    """The config.yaml of the model folder ``source`` is served from, if any. Its tensors are the
    defaults for shapes and names, so a converted version answers the requests the served one does."""
    config_path = source.parent.parent / "config.yaml"
    if not (source.parent.name.isdigit() and config_path.is_file()):
        return None
    try:
        return parse_model_config(config_path.read_text(encoding="utf-8"), config_path)
    except ServekitError:
        return None


def _sklearn_source(options: ConvertOptions) -> _Source:
    try:
        from servekit.toolkit import sklearn_source
    except ModuleNotFoundError as exc:
        raise ToolkitError(f"converting scikit-learn needs the 'sklearn' extra: pip install 'servekit[sklearn]'"
                           f" ({exc})") from None
    model = sklearn_source.load_sklearn_model(options.source, options.trust)
    return _Source(model.kind, model.inputs, lambda arrays: sklearn_source.run_sklearn_model(model, arrays),
                   lambda opset: sklearn_source.convert_sklearn(model, opset))


def _check_parity(source: _Source, runtime: Runtime, options: ConvertOptions) -> ParityReport:
    report = ParityReport(options.tolerance)
    signature = runtime.signature()
    assert signature is not None
    rng = np.random.default_rng(0)
    batches = sorted({*_RANDOM_BATCHES, source.given_batch})
    cases = [(f"random inputs ({batch} row{'s' if batch > 1 else ''})", random_inputs(source.inputs, batch, rng))
             for batch in batches]
    if options.samples is not None:
        cases.append((f"--sample {options.samples.name}", load_samples(options.samples, source.inputs)))
    for description, inputs in cases:
        expected = source.run(inputs)
        feed = {onnx.name: inputs[spec.name] for onnx, spec in zip(signature.inputs, source.inputs, strict=True)}
        try:
            answered = runtime.predict(feed)
        except Exception as exc:
            raise ToolkitError(f"onnxruntime failed on {description}: {exc}") from None
        if len(signature.outputs) != len(expected):
            raise ToolkitError(f"the ONNX model has {len(signature.outputs)} outputs; the source gives {len(expected)}"
                               f" ({', '.join(expected)})")
        # Outputs are matched by position: the exporters keep the source's order.
        converted: Arrays = dict(zip(expected, (answered[o.name] for o in signature.outputs), strict=True))
        report.add_case(description, expected, converted)
    return report


def _version_to_write(options: ConvertOptions) -> int:
    model_dir = options.destination
    existing = sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()) \
        if model_dir.is_dir() else []
    version = options.version if options.version is not None else (existing[-1] + 1 if existing else 1)
    if version < 1:
        raise ToolkitError(f"--version {version}: versions are numbered from 1")
    version_dir = model_dir / str(version)
    taken = [p.name for p in version_dir.iterdir() if p.name.endswith(_MODEL_FILES)] if version_dir.is_dir() else []
    if taken and not options.overwrite:
        raise ToolkitError(f"{version_dir} already holds {', '.join(sorted(taken))}; pass --overwrite to replace it,"
                           " or another --version")
    return version


def _write(options: ConvertOptions, version: int, staged: Path, signature: Signature | None, kind: str,
           exporter: str, opset: int, parity: ParityReport) -> ConvertResult:
    assert signature is not None
    version_dir = options.destination / str(version)
    if version_dir.is_dir() and options.overwrite:
        for old in version_dir.iterdir():
            if old.is_file() and old.name.endswith(_MODEL_FILES):
                old.unlink()
    version_dir.mkdir(parents=True, exist_ok=True)
    model_path = version_dir / "model.onnx"
    shutil.copyfile(staged, model_path)
    config_path = options.destination / "config.yaml"
    result = ConvertResult(model_path, config_path, False, version, kind, exporter, opset, signature, parity)
    if config_path.exists():
        result.notes.append(f"kept the existing {config_path}")
        return result
    batchable = all(spec.shape and spec.shape[0] == -1 for spec in signature.inputs)
    fields: dict[str, Any] = {
        "runtime": "onnx",
        "inputs": tensor_entries(signature.inputs),
        "outputs": tensor_entries(signature.outputs),
        "max_batch_size": options.max_batch_size if batchable else 0,
    }
    if batchable:
        fields["batching"] = {"enabled": True, "max_queue_delay_ms": 2}
    if kind.startswith("scikit-learn"):
        fields["simple"] = {"prediction_output": "label"} | (
            {"probability_output": "probabilities"} if len(signature.outputs) > 1 else {}
        )
    text = render_config(fields, [
        f"Written by `servekit convert` from {options.source.name} ({kind}; {exporter}, opset {opset}).",
        "Tensors are the ONNX model's; the first dimension is the batch. Tune with `servekit advise`.",
    ])
    write_config(config_path, text)
    result.config_written = True
    return result
