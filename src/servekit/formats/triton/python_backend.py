"""Triton's python backend as a servekit runtime: a model folder's ``<version>/model.py`` unchanged.

The model file (``default_model_filename``, else model.py) defines ``TritonPythonModel``.
At load its optional static ``auto_complete_config`` runs on the config, then
``initialize(args)`` gets what Triton passes, every value a string: ``model_config`` (the
full config as Triton's JSON), ``model_instance_kind``, ``model_instance_name``
(``<group>_<index>``), ``model_instance_device_id``, ``model_repository`` (the model's
folder), ``model_version`` and ``model_name``. ``finalize()`` runs at unload.

Batches arrive as their client requests (``per_request``): the requests servekit's batcher
gathered reach ONE ``execute(requests)`` call, a list with one ``pb_utils.InferenceRequest``
per client request, as Triton's dynamic batcher hands them over; without dynamic batching each
request runs alone. ``execute`` returns one ``InferenceResponse`` per request, in order. A
response carrying a ``TritonError`` fails its own request with the status Triton gives its
code (INTERNAL, the default, 500; INVALID_ARG 400; NOT_FOUND 404; UNAVAILABLE 503; UNSUPPORTED
501; UNKNOWN, ALREADY_EXISTS and CANCELLED 400 with their own gRPC codes) and its message;
an exception raised by ``execute`` fails the whole batch with 500. Inputs and outputs with
``reshape`` are reshaped here, as Triton does around the backend. Decoupled models are
refused at load.
"""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from servekit.errors import (
    ConfigError,
    InvalidInput,
    ModelFailed,
    ModelNotFound,
    ModelNotReady,
    ServekitError,
)
from servekit.formats.triton import pb_utils
from servekit.formats.triton.autocomplete import complete_with
from servekit.formats.triton.config import tensor_index_order
from servekit.formats.triton.model_module import load_model_module, model_class
from servekit.formats.triton.pbtxt import DEFAULT_MODEL_FILES, completed, config_json, parse_pbtxt
from servekit.formats.triton.repository import CONFIG_FILE
from servekit.grpc.generated import model_config_pb2 as pb
from servekit.runtimes.base import Arrays, Runtime, RuntimeRequest, imported_torch_gpus
from servekit.runtimes.placement import device_index, place_instance

__all__ = ["TritonPythonRuntime", "servekit_error"]

# Instances loaded per model version in this process: numbers each instance within its groups.
_MODULES = itertools.count()
# Request parameters Triton's frontends consume themselves: a model's parameters() never shows them.
_RESERVED_PARAMETERS = frozenset({"binary_data_output", "timeout", "priority", "sequence_id", "sequence_start",
                                  "sequence_end"})


def _answered(name: str, http_status: int, grpc_code: str) -> type[ServekitError]:
    """A ServekitError kind for a TritonError code servekit's own table has no error for."""
    return type(name, (ServekitError,), {"http_status": http_status, "grpc_code": grpc_code,
                                         "__doc__": f"A model answered a request with TritonError {grpc_code}."})


# TritonError code -> the error the client sees; statuses as Triton's own frontends answer them.
_ERRORS: dict[int, type[ServekitError]] = {
    pb_utils.TritonError.UNKNOWN: _answered("ModelAnsweredUnknown", 400, "UNKNOWN"),
    pb_utils.TritonError.INTERNAL: ServekitError,
    pb_utils.TritonError.NOT_FOUND: ModelNotFound,
    pb_utils.TritonError.INVALID_ARG: InvalidInput,
    pb_utils.TritonError.UNAVAILABLE: ModelNotReady,
    pb_utils.TritonError.UNSUPPORTED: _answered("ModelAnsweredUnsupported", 501, "UNIMPLEMENTED"),
    pb_utils.TritonError.ALREADY_EXISTS: _answered("ModelAnsweredAlreadyExists", 400, "ALREADY_EXISTS"),
    pb_utils.TritonError.CANCELLED: _answered("ModelAnsweredCancelled", 400, "CANCELLED"),
}


def servekit_error(error: pb_utils.TritonError) -> ServekitError:
    """The servekit error a TritonError answer becomes: its code picks the status, its message is kept."""
    return _ERRORS.get(error.code(), ServekitError)(error.message())


class TritonPythonRuntime(Runtime):
    platform = "python"
    per_request = True

    def load(self) -> None:
        ctx = self.context
        config_path = ctx.model_dir / CONFIG_FILE
        message, _ = parse_pbtxt(config_path.read_text(encoding="utf-8"), str(config_path))
        model_file = ctx.version_dir / (ctx.config.model_file or DEFAULT_MODEL_FILES["python"])
        self._module_name = f"servekit_triton_{ctx.model_name}_{ctx.version}_{next(_MODULES)}"
        module = load_model_module(model_file, self._module_name)
        try:
            self.device = place_instance(ctx.config.device, ctx.instance, imported_torch_gpus())
            full = completed(message, ctx.model_name, gpu_available=self.device != "cpu")
            full = complete_with(model_class(module, model_file), full, str(model_file))
            if full.model_transaction_policy.decoupled:
                raise ConfigError(f"{model_file}: decoupled models (any number of responses per request) are not "
                                  "served by servekit")
            self._read_tensors(full)
            self._model = model_class(module, model_file)()
            initialize = getattr(self._model, "initialize", None)
            if initialize is not None:
                initialize(self._initialize_args(full))
        except BaseException:
            sys.modules.pop(self._module_name, None)
            raise

    def _read_tensors(self, full: pb.ModelConfig) -> None:
        self._max_batch_size = full.max_batch_size
        self._input_names = [tensor.name for _, tensor in tensor_index_order(full.input)]
        self._output_names = [tensor.name for _, tensor in tensor_index_order(full.output)]
        self._reshape_in = {t.name: tuple(t.reshape.shape) for t in full.input if t.HasField("reshape")}
        self._reshape_out = {t.name: tuple(t.dims) for t in full.output if t.HasField("reshape")}

    def _initialize_args(self, full: pb.ModelConfig) -> dict[str, str]:
        ctx = self.context
        counts = [(group.name, group.count) for group in full.instance_group]
        index = ctx.instance % sum(count for _, count in counts)
        group_name = counts[-1][0]
        for name, count in counts:
            if index < count:
                group_name = name
                break
            index -= count
        return {
            "model_config": json.dumps(config_json(full), separators=(",", ":")),
            "model_instance_kind": "CPU" if self.device == "cpu" else "GPU",
            "model_instance_name": f"{group_name}_{index}",
            "model_instance_device_id": "0" if self.device == "cpu" else str(device_index(self.device)),
            "model_repository": str(ctx.model_dir),
            "model_version": str(ctx.version),
            "model_name": ctx.model_name,
        }

    def predict(self, inputs: Arrays) -> Arrays:
        raise NotImplementedError("the python backend runs batches as their requests (predict_requests)")

    def predict_requests(self, requests: Sequence[RuntimeRequest]) -> list[Arrays | Exception]:
        limit = self._max_batch_size
        refused: dict[int, Exception] = {}  # position -> why; the model never sees these requests
        model_requests: list[pb_utils.InferenceRequest] = []
        for position, request in enumerate(requests):
            if limit > 0 and _rows(request.inputs) > limit:
                refused[position] = InvalidInput(f"inference request batch-size must be <= {limit} for "
                                                 f"'{self.context.model_name}'")
            else:
                model_requests.append(self._model_request(request))
        answers: list[Arrays | Exception] = []
        if model_requests:
            responses = self._model.execute(model_requests)
            if not isinstance(responses, list | tuple) or len(responses) != len(model_requests):
                got = len(responses) if isinstance(responses, list | tuple) else type(responses).__name__
                raise ModelFailed(f"execute returned {got} responses for {len(model_requests)} requests")
            answers = [self._answer(response) for response in responses]
        for position, error in refused.items():  # in position order: each goes back where it was
            answers.insert(position, error)
        return answers

    def _model_request(self, request: RuntimeRequest) -> pb_utils.InferenceRequest:
        inputs = request.inputs
        if self._reshape_in:
            tensors = [pb_utils.Tensor(name, self._reshaped_input(name, inputs[name]), _checked=True)
                       for name in self._input_names if name in inputs]
        else:
            tensors = [pb_utils.Tensor(name, inputs[name], _checked=True) for name in self._input_names
                       if name in inputs]
        parameters = request.parameters
        return pb_utils.InferenceRequest(
            tensors,
            requested_output_names=request.requested_outputs or self._output_names,
            request_id=request.id or "",
            parameters={k: v for k, v in parameters.items() if k not in _RESERVED_PARAMETERS} if parameters else None,
        )

    def _reshaped_input(self, name: str, array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        shape = self._reshape_in.get(name)
        if shape is None:
            return array
        return array.reshape((array.shape[0], *shape) if self._max_batch_size > 0 else shape)

    def _answer(self, response: Any) -> Arrays | Exception:
        if not isinstance(response, pb_utils.InferenceResponse):
            return ModelFailed(f"execute answered a request with {type(response).__name__}; expected "
                               "pb_utils.InferenceResponse")
        error = response.error()
        if error is not None:
            return servekit_error(error)
        if not self._reshape_out:
            return {tensor.name(): tensor.as_numpy() for tensor in response.output_tensors()}
        outputs: Arrays = {}
        for tensor in response.output_tensors():
            array = tensor.as_numpy()
            dims = self._reshape_out.get(tensor.name())
            if dims is not None:
                array = array.reshape((array.shape[0], *dims) if self._max_batch_size > 0 else dims)
            outputs[tensor.name()] = array
        return outputs

    def unload(self) -> None:
        model = getattr(self, "_model", None)
        try:
            finalize = getattr(model, "finalize", None)
            if finalize is not None:
                finalize()
        finally:
            self._model = None
            sys.modules.pop(self._module_name, None)


def _rows(inputs: Arrays) -> int:
    first = next(iter(inputs.values()), None)
    return int(first.shape[0]) if first is not None and first.ndim else 0


