"""PyTorch runtimes: TorchScript (``*.pt``, ``*.torchscript``), torch.export (``*.pt2``), and
whole modules pickled with ``torch.save`` (``*.pth``, or a ``*.pt`` that is one), only with
``trust_pickle: true`` (see ``servekit.runtimes.torch_pickle``).

Both feed inputs positionally, in the order of the declared inputs (config first, else
the derived signature), and map what the module returns onto output names: a dict by
key, a tuple or list in the order of the output names, a lone tensor onto the first
output name ("output" when none is declared). Only numeric tensors are served: BYTES
has no torch equivalent.
"""

from __future__ import annotations

import warnings
from abc import abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.export.passes import move_to_device_pass

from servekit.errors import ConfigError, InvalidInput, ModelFailed
from servekit.runtimes.base import Arrays, Runtime, Signature, find_file
from servekit.runtimes.placement import place_instance
from servekit.runtimes.torch_pickle import is_pickled_module, load_pickled_module
from servekit.types import TensorSpec, datatype_of, numpy_dtype

__all__ = ["TorchExportRuntime", "TorchPickleRuntime", "TorchScriptRuntime"]

_DATATYPES: dict[torch.dtype, str] = {
    torch.bool: "BOOL",
    torch.uint8: "UINT8",
    torch.uint16: "UINT16",
    torch.uint32: "UINT32",
    torch.uint64: "UINT64",
    torch.int8: "INT8",
    torch.int16: "INT16",
    torch.int32: "INT32",
    torch.int64: "INT64",
    torch.float16: "FP16",
    torch.float32: "FP32",
    torch.float64: "FP64",
}


class _TorchRuntime(Runtime):
    """Shared load/predict; subclasses only say how to read the file and what it declares."""

    # Modules in eval/inference mode keep no per-call state, and torch releases the GIL.
    thread_safe = True
    suffixes: tuple[str, ...] = ()
    _probed: Signature | None = None  # what one run told (_probe) of a module that cannot describe itself

    @abstractmethod
    def _load_module(self, path: Path) -> Callable[..., Any]:
        """Read the model file onto ``self.device`` and return something callable."""

    def load(self) -> None:
        config = self.context.config
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        self.device = place_instance(config.device, self.context.instance, gpus)
        self._module = self._load_module(find_file(self.context.version_dir, self.suffixes, config.model_file))
        derived = self.signature()
        if derived is None and config.inputs and not config.outputs:
            derived = self._probed = self._probe([t.spec() for t in config.inputs])
        if derived is None and not (config.inputs and config.outputs):
            raise ConfigError(
                f"{self.context.model_dir}: a {self.platform} model cannot describe its own tensors;"
                " declare 'inputs' (and 'outputs', else one run on zeros tells them) in config.yaml"
            )
        declared = [t.spec() for t in config.inputs or []]
        # A program knows its argument order; the config may list inputs in any order, not others.
        inputs = list(derived.inputs) if derived else declared
        if declared and {s.name for s in declared} != {s.name for s in inputs}:
            raise ConfigError(
                f"{self.context.model_dir}: config inputs ({', '.join(s.name for s in declared)}) differ from"
                f" the model's ({', '.join(s.name for s in inputs)})"
            )
        outputs = [t.spec() for t in config.outputs] if config.outputs else list(derived.outputs if derived else ())
        for spec in declared + inputs + outputs:
            if spec.datatype == "BYTES":
                raise ConfigError(f"{self.context.model_dir}: tensor {spec.name!r} is BYTES, which torch cannot hold")
        self._input_names = [spec.name for spec in inputs]
        self._output_names = [spec.name for spec in outputs] or ["output"]

    def predict(self, inputs: Arrays) -> Arrays:
        missing = [name for name in self._input_names if name not in inputs]
        if missing:
            raise InvalidInput(f"missing input(s): {', '.join(missing)}")
        with torch.inference_mode():
            args = [_to_tensor(name, inputs[name]).to(self.device) for name in self._input_names]
            result = self._module(*args)
            return self._map_outputs(result)

    def _map_outputs(self, result: Any) -> Arrays:
        if isinstance(result, torch.Tensor):
            return {self._output_names[0]: _to_numpy(self._output_names[0], result)}
        if isinstance(result, dict):
            return {str(name): _to_numpy(str(name), value) for name, value in result.items()}
        if isinstance(result, tuple | list):
            if len(result) != len(self._output_names):
                raise ModelFailed(
                    f"model returned {len(result)} outputs but {len(self._output_names)} are declared"
                    f" ({', '.join(self._output_names)})"
                )
            return {name: _to_numpy(name, value) for name, value in zip(self._output_names, result, strict=True)}
        raise ModelFailed(f"model returned {type(result).__name__}; expected a tensor, a tuple/list or a dict")

    def _probe(self, inputs: list[TensorSpec]) -> Signature:
        """The outputs of a module that cannot describe them, from one run on zeros shaped as the
        declared inputs (two rows where the batch varies, one where another dimension does): names
        as ``predict`` maps them (a dict's keys, else output / output_0, ...), datatypes as run. A
        varying batch stays -1; the other dimensions are those of the run, -1 when an input's
        non-batch dimension varies (the run cannot tell then)."""
        batched = all(spec.shape and spec.shape[0] == -1 for spec in inputs)
        sized_by_input = any(-1 in spec.shape[1:] for spec in inputs)
        try:
            args = [_to_tensor(spec.name, np.zeros([(2 if i == 0 and batched else 1) if dim == -1 else dim
                                                     for i, dim in enumerate(spec.shape)],
                                                    dtype=numpy_dtype(spec.datatype))).to(self.device)
                    for spec in inputs]
            with torch.inference_mode():
                result = self._module(*args)
            if isinstance(result, dict):
                named = {str(name): value for name, value in result.items()}
            elif isinstance(result, tuple | list):
                named = {f"output_{i}": value for i, value in enumerate(result)}
            else:
                named = {"output": result}
            arrays = {name: _to_numpy(name, value) for name, value in named.items()}
        except Exception as exc:
            reason = (str(exc).strip().splitlines() or [""])[0]
            raise ConfigError(f"{self.context.model_dir}: outputs: one run on zeros shaped as the declared inputs "
                              f"failed ({type(exc).__name__}: {reason}); declare 'outputs'") from None
        outputs = tuple(
            TensorSpec(name, datatype_of(array), tuple(
                -1 if (i == 0 and batched) or (i > 0 and sized_by_input) else dim
                for i, dim in enumerate(array.shape)))
            for name, array in arrays.items())
        return Signature(tuple(inputs), outputs)

    def unload(self) -> None:
        self._module = None  # type: ignore[assignment]
        if self.device != "cpu":
            torch.cuda.empty_cache()


class TorchScriptRuntime(_TorchRuntime):
    """A ``torch.jit.save``-d module; it cannot describe its tensors, so the config declares its
    inputs, and its outputs unless one run on zeros may tell them (``_probe``)."""

    platform = "pytorch_libtorch"
    suffixes = (".pt", ".torchscript")

    def signature(self) -> Signature | None:
        return self._probed

    def _load_module(self, path: Path) -> Callable[..., Any]:
        if is_pickled_module(path):  # torch.save(model, "model.pt"): a pickle, not TorchScript
            return _load_pickle(self, path)
        with warnings.catch_warnings():
            # TorchScript is deprecated upstream, but serving existing .pt files is the point here.
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location=self.device)
        module.eval()
        return module  # type: ignore[no-any-return]


class TorchPickleRuntime(_TorchRuntime):
    """A whole module saved with ``torch.save``; only with ``trust_pickle: true``, and like TorchScript
    it cannot describe its tensors, so the config must."""

    platform = "pytorch"
    suffixes = (".pth",)

    def _load_module(self, path: Path) -> Callable[..., Any]:
        return _load_pickle(self, path)


def _load_pickle(runtime: _TorchRuntime, path: Path) -> Callable[..., Any]:
    context = runtime.context
    return load_pickled_module(path, (context.model_dir, context.version_dir), context.config.trust_pickle,
                               "set 'trust_pickle: true' in config.yaml", map_location=runtime.device)


class TorchExportRuntime(_TorchRuntime):
    """A ``torch.export.save``-d ExportedProgram; its graph gives names, dtypes and shapes."""

    platform = "pytorch_export"
    suffixes = (".pt2",)

    def _load_module(self, path: Path) -> Callable[..., Any]:
        program = torch.export.load(str(path))
        if self.device != "cpu":
            program = move_to_device_pass(program, self.device)
        self._program = program
        # No .eval() here: an exported program is frozen in the mode it was exported in.
        return program.module()

    def signature(self) -> Signature:
        graph_signature = self._program.graph_signature
        nodes = {node.name: node for node in self._program.graph.nodes}
        inputs = tuple(_spec(name, nodes.get(name)) for name in graph_signature.user_inputs)
        values = [nodes.get(str(name)) for name in graph_signature.user_outputs]
        out_spec = self._program.call_spec.out_spec
        if out_spec is not None and out_spec.type is dict:
            names = [str(key) for key in out_spec.context]
        elif self.context.config.outputs and len(self.context.config.outputs) == len(values):
            names = [t.name for t in self.context.config.outputs]
        else:
            names = [f"output_{i}" for i in range(len(values))]
        outputs = tuple(_spec(name, node) for name, node in zip(names, values, strict=True))
        return Signature(inputs, outputs)


def _spec(name: str, node: Any) -> TensorSpec:
    value = node.meta.get("val") if node is not None else None
    if not isinstance(value, torch.Tensor):
        raise ConfigError(f"exported program tensor {name!r} is not a tensor; servekit serves tensors only")
    if value.dtype not in _DATATYPES:
        raise ConfigError(f"exported program tensor {name!r} has dtype {value.dtype}, which servekit cannot serve")
    # Symbolic (dynamic) dimensions are SymInts, not ints.
    shape = tuple(dim if isinstance(dim, int) else -1 for dim in value.shape)
    return TensorSpec(name, _DATATYPES[value.dtype], shape)


def _to_tensor(name: str, array: np.ndarray[Any, Any]) -> torch.Tensor:
    if array.dtype.kind in ("O", "S", "U"):
        raise InvalidInput(f"input {name!r} is BYTES; the torch runtimes take numeric tensors only")
    if not array.flags.writeable:
        # torch.from_numpy shares memory and warns on read-only buffers (e.g. decoded request bodies).
        array = array.copy()
    return torch.from_numpy(np.ascontiguousarray(array))


def _to_numpy(name: str, value: Any) -> np.ndarray[Any, Any]:
    if not isinstance(value, torch.Tensor):
        raise ModelFailed(f"model output {name!r} is {type(value).__name__}, not a tensor")
    if value.dtype not in _DATATYPES:
        raise ModelFailed(f"model output {name!r} has dtype {value.dtype}, which servekit cannot serve")
    return value.detach().cpu().numpy()
