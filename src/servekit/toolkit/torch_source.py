"""PyTorch sources for ``servekit convert``: load one, run it, export it to ONNX.

Four kinds of source, told apart by the file and ``--module``:

- an ``nn.Module`` named as ``FILE.py:NAME`` (a class or a factory taking no arguments),
  with weights from a state-dict file (or none, when the source is the .py file itself);
- a whole ``nn.Module`` saved with ``torch.save`` (``.pth``, or a ``.pt`` that is such a pickle),
  read only with ``--trust-pickle``, its class found in the file's folders or installed
  (``servekit.runtimes.torch_pickle``);
- a TorchScript file (``torch.jit.save``), exported through ``torch.export`` when torch's
  converter can read it, else through the TorchScript-based ONNX exporter;
- a ``torch.export`` program (``.pt2``).

Every export makes the first dimension of every input a dynamic batch. torch is imported
here at module level: import this module only when a torch source is given.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from servekit.errors import ConfigError
from servekit.runtimes.modules import import_file
from servekit.runtimes.torch_pickle import is_pickled_module, load_pickled_module
from servekit.toolkit.errors import ToolkitError
from servekit.toolkit.onnx_tools import BATCH_DIM, target_opset
from servekit.toolkit.specs import Arrays, random_inputs
from servekit.types import DATATYPES, TensorSpec

__all__ = ["TorchModel", "export_to_onnx", "load_torch_model", "run_torch_model"]

# The newest opsets torch 2.x's exporters write: torch.export-based, and TorchScript-based.
_DYNAMO_MAX_OPSET = 23
_LEGACY_MAX_OPSET = 20
# Tracing with one row lets torch.export specialise the batch to 1; two rows keep it symbolic.
_TRACE_BATCH = 2
_TORCH_DTYPES = {name: getattr(torch, str(dtype)) for name, dtype in DATATYPES.items() if name != "BYTES"}


@dataclass(slots=True)
class TorchModel:
    """A loaded PyTorch source: what to call, and its named inputs and outputs."""

    kind: str  # "nn.Module" | "TorchScript" | "torch.export"
    module: Callable[..., Any]
    inputs: list[TensorSpec]
    output_names: list[str]
    program: Any = None  # the ExportedProgram of a .pt2 source (its batch is dynamic)


def load_torch_model(
    source: Path, module_ref: str | None, shapes: Sequence[tuple[int, ...]], datatypes: Sequence[str],
    output_names: Sequence[str] = (), input_names: Sequence[str] = (), trust_pickle: bool = False,
) -> TorchModel:
    """Load ``source`` and settle its input specs and output names (one run on random rows).

    ``input_names`` rename the inputs (the module's own argument names otherwise); ``output_names``
    name the outputs of a module returning a tensor or a tuple (a dict's keys are its names).
    ``trust_pickle``: a whole module saved with ``torch.save`` may be unpickled.
    """
    if source.suffix == ".pt2":
        program = torch.export.load(str(source))
        module: Callable[..., Any] = program.module()
        names = [str(name) for name in program.graph_signature.user_inputs]
        placeholders = {node.name: node for node in program.graph.nodes}
        found = [tuple(_program_dims(placeholders[name])) for name in names]
        fixed = [f"{name} {list(dims)}" for name, dims in zip(names, found, strict=True) if dims[0] != -1]
        if fixed:
            # The program's guards pin the batch; no export step can widen it afterwards.
            raise ToolkitError(
                f"{source} was exported with a fixed batch ({', '.join(fixed)}); export it again with a dynamic"
                " one: torch.export.export(model, args, dynamic_shapes=({0: torch.export.Dim('batch')}, ...))"
            )
        types = list(datatypes) or [_program_datatype(placeholders[name]) for name in names]
        model = TorchModel("torch.export", module, _specs(names, shapes or found, types), [], program)
    elif module_ref is not None:
        module = _load_module(source, module_ref)
        names = _forward_names(inspect.signature(module.forward), len(shapes))
        model = TorchModel("nn.Module", module, _specs(names, shapes, datatypes), [])
    elif source.suffix in (".pt", ".pth") and is_pickled_module(source):
        try:
            # The class may sit beside the file, or in the model folder above a version folder.
            pickled = load_pickled_module(source, (source.parent, source.parent.parent), trust_pickle,
                                          "pass --trust-pickle (a state dict instead needs --module FILE.py:CLASS)")
        except ConfigError as exc:
            raise ToolkitError(exc.message) from None
        names = _forward_names(inspect.signature(pickled.forward), len(shapes))
        model = TorchModel("nn.Module", pickled, _specs(names, shapes, datatypes), [])
    else:
        module = _load_torchscript(source)
        names = [argument.name for argument in module.forward.schema.arguments[1:]]  # type: ignore[attr-defined]
        model = TorchModel("TorchScript", module, _specs(names, shapes, datatypes), [])
    if input_names:
        if len(input_names) != len(model.inputs):
            raise ToolkitError(f"{len(input_names)} input name(s) given; the model takes {len(model.inputs)}")
        model.inputs = [TensorSpec(name, s.datatype, s.shape) for name, s in zip(input_names, model.inputs,
                                                                                 strict=True)]
    probe = _call(model.module, random_inputs(model.inputs, _TRACE_BATCH, np.random.default_rng(0)), model.inputs)
    model.output_names = _output_names(probe, output_names)
    return model


def run_torch_model(model: TorchModel, inputs: Arrays) -> Arrays:
    """The source's outputs for ``inputs``, by output name, as numpy arrays."""
    result = _call(model.module, inputs, model.inputs)
    values = list(result.values()) if isinstance(result, dict) else (
        list(result) if isinstance(result, tuple | list) else [result]
    )
    return {name: value.detach().cpu().numpy() for name, value in zip(model.output_names, values, strict=True)}


def export_to_onnx(model: TorchModel, opset: int | None) -> tuple[Any, str]:
    """The ONNX ModelProto of ``model`` with a dynamic batch, and a phrase naming the exporter used."""
    args = _tensors(random_inputs(model.inputs, _TRACE_BATCH, np.random.default_rng(1)), model.inputs)
    with _quiet_torch():
        if model.program is not None:  # its batch is dynamic already
            return _dynamo_export(model.program, args, model, opset, dynamic=False), "torch.export"
        if model.kind == "nn.Module":
            return _dynamo_export(model.module, args, model, opset), "torch.export"
        try:
            from torch._export.converter import TS2EPConverter  # private, but torch's only TorchScript reader

            program = TS2EPConverter(model.module, args).convert()  # type: ignore[arg-type]
            return _dynamo_export(program.module(), args, model, opset), "torch.export, from TorchScript"
        except Exception as exc:  # the converter reads part of TorchScript; the old exporter reads more
            try:
                return _legacy_export(model, args, opset), "the TorchScript-based exporter"
            except ToolkitError as legacy:
                raise ToolkitError(f"{legacy}; the torch.export route failed too: {_first_line(exc)}") from None


def _dynamo_export(target: Any, args: tuple[Any, ...], model: TorchModel, opset: int | None,
                   dynamic: bool = True) -> Any:
    batch = torch.export.Dim(BATCH_DIM)
    try:
        program = torch.onnx.export(
            target, args, None, input_names=[spec.name for spec in model.inputs], output_names=model.output_names,
            dynamic_shapes=tuple({0: batch} for _ in args) if dynamic else None,
            opset_version=target_opset(_DYNAMO_MAX_OPSET, opset), verbose=False, dynamo=True,
        )
    except ModuleNotFoundError as exc:
        raise ToolkitError(f"torch's ONNX exporter needs {exc.name}: pip install 'servekit[torch]'") from None
    except Exception as exc:
        raise ToolkitError(f"torch.onnx.export failed: {_first_line(exc)}") from None
    assert program is not None
    return program.model_proto


def _legacy_export(model: TorchModel, args: tuple[Any, ...], opset: int | None) -> Any:
    import onnx

    names = [spec.name for spec in model.inputs] + model.output_names
    buffer = io.BytesIO()
    try:
        torch.onnx.export(
            model.module, args, buffer, input_names=[spec.name for spec in model.inputs],  # type: ignore[arg-type]
            output_names=model.output_names, dynamic_axes={name: {0: BATCH_DIM} for name in names},
            opset_version=target_opset(_LEGACY_MAX_OPSET, opset), dynamo=False,
        )
    except Exception as exc:
        raise ToolkitError(f"torch.onnx.export (TorchScript-based) failed: {_first_line(exc)}") from None
    return onnx.load_from_string(buffer.getvalue())


def _load_module(source: Path, module_ref: str) -> torch.nn.Module:
    file_name, _, attribute = module_ref.rpartition(":")
    path = Path(file_name)
    if not file_name or not attribute or path.suffix != ".py":
        raise ToolkitError(f"--module {module_ref!r}: expected FILE.py:NAME, e.g. net.py:TinyNet")
    if not path.is_file():
        raise ToolkitError(f"--module {module_ref!r}: no such file {path}")
    python_module = import_file(path, f"servekit_convert_{path.stem}")
    factory = getattr(python_module, attribute, None)
    if not callable(factory):
        raise ToolkitError(f"--module {module_ref!r}: {path} defines no class or function {attribute!r}")
    try:
        module = factory()
    except TypeError as exc:
        raise ToolkitError(f"--module {module_ref!r}: {attribute}() must take no arguments ({exc})") from None
    if not isinstance(module, torch.nn.Module):
        raise ToolkitError(f"--module {module_ref!r}: {attribute}() gave a {type(module).__name__}, not an nn.Module")
    if source.resolve() != path.resolve():
        module.load_state_dict(_state_dict(source), strict=True)
    return module.eval()


def _state_dict(source: Path) -> dict[str, Any]:
    try:
        loaded = torch.load(str(source), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ToolkitError(
            f"{source}: not a state dict torch can load safely (weights only): {_first_line(exc)}") from None
    for key in ("state_dict", "model_state_dict", "model"):  # common checkpoint layouts
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
    if not isinstance(loaded, dict):
        raise ToolkitError(f"{source}: holds a {type(loaded).__name__}, not a state dict")
    return loaded


def _load_torchscript(source: Path) -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.load(str(source), map_location="cpu").eval()  # type: ignore[no-untyped-call]
    except Exception as exc:
        raise ToolkitError(
            f"{source}: not a TorchScript file ({_first_line(exc)}). For a state dict or a model class,"
            " name the class with --module FILE.py:CLASS; for torch.export use a .pt2 file"
        ) from None


def _forward_names(signature: inspect.Signature, count: int) -> list[str]:
    names = [p.name for p in signature.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if count == 0:
        raise ToolkitError("an nn.Module does not tell its input shapes: give --input-shape (e.g. 1,64) per input")
    if count > len(names):
        raise ToolkitError(f"{count} --input-shape given, but forward() takes {len(names)} tensor(s)")
    return names[:count]


def _program_dims(node: Any) -> list[int]:
    value = node.meta.get("val")
    return [dim if isinstance(dim, int) else -1 for dim in value.shape]


def _program_datatype(node: Any) -> str:
    dtype = node.meta.get("val").dtype
    for name, torch_dtype in _TORCH_DTYPES.items():
        if torch_dtype == dtype:
            return name
    raise ToolkitError(f"input {node.name!r} has dtype {dtype}, which servekit cannot serve")


def _specs(names: Sequence[str], shapes: Sequence[Sequence[int]], datatypes: Sequence[str]) -> list[TensorSpec]:
    if not shapes:
        raise ToolkitError("this model does not tell its input shapes: give --input-shape (e.g. 1,64) per input")
    if len(shapes) != len(names):
        raise ToolkitError(f"the model takes {len(names)} input(s) ({', '.join(names)}); got {len(shapes)} shape(s)")
    if len(datatypes) not in (0, 1, len(names)):
        raise ToolkitError(f"give one --input-dtype, or one per input ({len(names)})")
    types = list(datatypes) * len(names) if len(datatypes) == 1 else list(datatypes) or ["FP32"] * len(names)
    for datatype in types:
        if datatype not in _TORCH_DTYPES:
            raise ToolkitError(f"--input-dtype {datatype}: expected one of {', '.join(_TORCH_DTYPES)}")
    # The first dimension is the batch (-1); the rest keep their sizes.
    return [TensorSpec(name, datatype, (-1, *shape[1:])) for name, shape, datatype in zip(names, shapes, types,
                                                                                         strict=True)]


def _tensors(inputs: Arrays, specs: Sequence[TensorSpec]) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(np.ascontiguousarray(inputs[spec.name])) for spec in specs)


def _call(module: Callable[..., Any], inputs: Arrays, specs: Sequence[TensorSpec]) -> Any:
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return module(*_tensors(inputs, specs))
        except Exception as exc:
            shapes = ", ".join(f"{spec.name} {spec.datatype} {list(inputs[spec.name].shape)}" for spec in specs)
            raise ToolkitError(f"the model failed on random inputs ({shapes}): {_first_line(exc)}") from None


def _output_names(result: Any, given: Sequence[str]) -> list[str]:
    if isinstance(result, dict):
        found = [str(key) for key in result]
    elif isinstance(result, tuple | list):
        found = [f"output_{i}" for i in range(len(result))]
    elif isinstance(result, torch.Tensor):
        found = ["output"]
    else:
        raise ToolkitError(f"the model returned a {type(result).__name__}; expected tensors (one, a tuple or a dict)")
    values = list(result.values()) if isinstance(result, dict) else list(result) if isinstance(result, tuple | list) \
        else [result]
    if not all(isinstance(value, torch.Tensor) for value in values):
        raise ToolkitError("the model returned something that is not a tensor; only tensors can be exported")
    if isinstance(result, dict) or not given:
        return found
    if len(given) != len(found):
        raise ToolkitError(f"{len(given)} output name(s) given but the model returns {len(found)} output(s)")
    return list(given)


@contextlib.contextmanager
def _quiet_torch() -> Iterator[None]:
    """Keep the exporters' deprecation warnings and registry chatter off the user's console."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:400]
