"""The data plane: the one transport-agnostic entry point behind HTTP and gRPC.

Transports decode wire bytes into InferenceRequest, call a method here and encode
what comes back. Every decision about models, versions, validation and errors is
made here or below (registry, batcher), never in a transport. Each inference request
is recorded here, once (metrics and the access log, ``servekit.observability.requests``),
under the protocol its transport names; the response cache sits here, before the batcher.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from servekit import __version__
from servekit.cache import ResponseCache
from servekit.codecs import triton
from servekit.codecs.simple import SimplePrediction
from servekit.errors import InvalidInput, ModelNotFound, ModelNotReady, ServekitError
from servekit.observability.metrics import Protocol
from servekit.observability.requests import RequestObservation
from servekit.repository.registry import Registry
from servekit.repository.traffic import routing_key
from servekit.repository.version import LoadState, ModelVersion
from servekit.runtimes.base import Arrays
from servekit.types import DATATYPES, InferenceRequest, InferenceResponse, ModelMetadata, Tensor, TensorSpec

__all__ = ["EXTENSIONS", "DataPlane"]

EXTENSIONS = ("binary_tensor_data", "model_repository", "statistics", "model_configuration", "schedule_policy")


def _check_tensor(spec: TensorSpec, tensor: Tensor) -> None:
    if tensor.datatype != spec.datatype:
        raise InvalidInput(f"input {spec.name!r} has datatype {tensor.datatype}; the model expects {spec.datatype}")
    shape = tensor.shape
    if len(shape) != len(spec.shape) or any(
        want not in (-1, got) for want, got in zip(spec.shape, shape, strict=False)
    ):
        raise InvalidInput(f"input {spec.name!r} has shape {list(shape)}; the model expects {list(spec.shape)}")


class DataPlane:
    def __init__(self, registry: Registry, default_model: str | None = None,
                 cache: ResponseCache | None = None) -> None:
        self.registry = registry
        self._default_model = default_model
        self.cache = cache  # used for models whose config enables it
        self.started = False  # set once the start-up loading has finished
        self.stopping = False

    # -- health and metadata -------------------------------------------------

    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        """Ready once start-up loading finished; a broken model does not hold the server back."""
        return self.started and not self.stopping

    def server_metadata(self) -> dict[str, Any]:
        return {"name": "servekit", "version": __version__, "extensions": list(EXTENSIONS)}

    def model_metadata(self, name: str, version: str | None = None) -> ModelMetadata:
        chosen = self.registry.resolve(name, version)
        entry = self.registry.entry(name)
        versions = tuple(str(v) for v, mv in sorted(entry.versions.items()) if mv.state is LoadState.READY)
        return ModelMetadata(chosen.name, versions, chosen.platform, chosen.inputs, chosen.outputs)

    def model_ready(self, name: str, version: str | None = None) -> bool:
        try:
            self.registry.resolve(name, version)
        except ModelNotReady:
            return False
        return True

    def model_config(self, name: str, version: str | None = None) -> dict[str, Any]:
        return triton.model_config(self.registry.resolve(name, version))

    def model_statistics(self, name: str | None = None, version: str | None = None) -> dict[str, Any]:
        if name is None:
            chosen = [
                mv for n in self.registry.model_names() for mv in self.registry.entry(n).versions.values()
            ]
        elif version:
            chosen = [self.registry.resolve(name, version)]
        else:
            chosen = list(self.registry.entry(name).versions.values())
        return {"model_stats": [triton.model_statistics(mv) for mv in chosen]}

    # -- inference -------------------------------------------------------------

    async def infer(self, request: InferenceRequest, protocol: Protocol = "internal") -> InferenceResponse:
        """Validate against the model's signature, answer from the cache or run through the
        batcher, select outputs. ``protocol`` names the transport in metrics and the access log."""
        with RequestObservation(protocol, request.model_name, request.id, self.registry.model_names) as seen:
            return await self._infer(request, seen)

    def rejections(self, protocol: Protocol, model: str | None = None) -> RequestObservation:
        """A context for a transport's decoding of one request: a request it rejects there (a body
        that does not parse, an unknown model) is recorded like one the data plane answered.
        ``model`` None: the simple API's default model."""
        if model is None:
            try:
                model = self.default_model()
            except ServekitError:
                model = ""
        return RequestObservation(protocol, model, None, self.registry.model_names, rejections_only=True)

    async def _infer(self, request: InferenceRequest, seen: RequestObservation) -> InferenceResponse:
        version = self.registry.route(request.model_name, request.model_version, routing_key(request.parameters))
        seen.resolved(version.name, str(version.version))
        started = time.perf_counter_ns()
        ok = False
        try:
            arrays = self._validated_inputs(version, request)
            wanted = self._requested_outputs(version, request)
            if self.cache is not None and version.config.cache.enabled:
                outputs = await self._cached_answer(self.cache, version, arrays, request, seen)
            else:
                outputs = await _run(version, arrays, request)
            ok = True
        finally:
            version.stats.record_request(ok, time.perf_counter_ns() - started)
        specs = version.output_by_name
        tensors = [Tensor.from_array(name, _conform(_output(outputs, name), specs[name])) for name in wanted]
        return InferenceResponse(request.model_name, str(version.version), tensors, id=request.id)

    async def _cached_answer(self, cache: ResponseCache, version: ModelVersion, arrays: Arrays,
                             request: InferenceRequest, seen: RequestObservation) -> Arrays:
        """The cache's answer to these inputs, else the model's (which is then cached)."""
        asked = time.perf_counter_ns()
        key = cache.key(version, arrays, request.parameters)
        cached = await cache.get(key)
        version.stats.record_cache(cached is not None, time.perf_counter_ns() - asked)
        seen.cached(cached is not None)
        if cached is not None:
            return cached
        outputs = await _run(version, arrays, request)
        declared = {spec.name: outputs[spec.name] for spec in version.outputs if spec.name in outputs}
        await cache.put(key, declared, version.config.cache.ttl_s)
        return outputs

    def _validated_inputs(self, version: ModelVersion, request: InferenceRequest) -> Arrays:
        given = {tensor.name: tensor for tensor in request.inputs}
        specs = version.input_by_name
        unknown = sorted(set(given) - set(specs))
        if unknown:
            raise InvalidInput(f"model {version.name!r} has no input named {', '.join(map(repr, unknown))}; "
                               f"its inputs are {', '.join(specs)}")
        missing = [name for name in specs if name not in given]
        if missing:  # inputs the config marks optional may be left out
            optional = {tensor.name for tensor in version.config.inputs or () if tensor.optional}
            missing = [name for name in missing if name not in optional]
        if missing:
            raise InvalidInput(f"input {', '.join(map(repr, missing))} missing; model {version.name!r} needs "
                               f"{', '.join(specs)}")
        if len(given) < len(specs):
            specs = {name: spec for name, spec in specs.items() if name in given}
        for name, spec in specs.items():
            _check_tensor(spec, given[name])
        return {name: given[name].data for name in specs}

    def _requested_outputs(self, version: ModelVersion, request: InferenceRequest) -> list[str]:
        names = [spec.name for spec in version.outputs]
        if not request.outputs:
            return names
        asked = [output.name for output in request.outputs]
        unknown = [name for name in asked if name not in names]
        if unknown:
            raise InvalidInput(f"model {version.name!r} has no output named {', '.join(map(repr, unknown))}; "
                               f"its outputs are {', '.join(names)}")
        return asked

    # -- the simple API ----------------------------------------------------------

    def default_model(self) -> str:
        """The model the simple API serves: the configured one, else the only one."""
        if self._default_model is not None:
            return self._default_model
        names = self.registry.model_names()
        if len(names) == 1:
            return names[0]
        raise ModelNotFound(
            "the simple API needs a default model: this server has "
            f"{len(names)} models ({', '.join(names)}); start it with --default-model NAME"
        )

    def health(self) -> dict[str, Any]:
        try:
            version = self.registry.resolve(self.default_model())
        except ServekitError:
            return {"status": "unavailable", "model_loaded": False, "device": "none"}
        return {"status": "ok" if self.ready() else "starting", "model_loaded": True, "device": version.device}

    async def predict(self, rows: np.ndarray[Any, Any], return_probabilities: bool,
                      model: str | None = None, protocol: Protocol = "internal") -> SimplePrediction:
        """Run rows (2-D) through a single-input model and read predictions and probabilities."""
        with RequestObservation(protocol, model or "", None, self.registry.model_names) as seen:
            if not model:
                seen.model = model = self.default_model()
            return await self._predict(rows, return_probabilities, model, seen)

    async def _predict(self, rows: np.ndarray[Any, Any], return_probabilities: bool, model: str,
                       seen: RequestObservation) -> SimplePrediction:
        started = time.perf_counter()
        version = self.registry.route(model)
        seen.resolved(version.name, str(version.version))
        if len(version.inputs) != 1:
            raise InvalidInput(f"the simple API needs a model with one input; {version.name!r} has "
                               f"{len(version.inputs)}")
        spec = version.inputs[0]
        data = rows.astype(np.float64) if spec.datatype == "FP64" else rows
        tensor = Tensor(spec.name, "FP64" if spec.datatype == "FP64" else "FP32", tuple(data.shape), data)
        request = InferenceRequest(version.name, [tensor], model_version=str(version.version))
        response = await self._infer(request, seen)
        outputs = {t.name: t.data for t in response.outputs}
        predictions, probabilities = _read_simple(version, outputs)
        return SimplePrediction(
            predictions=predictions,
            probabilities=probabilities if return_probabilities else None,
            latency_ms=(time.perf_counter() - started) * 1000,
        )


async def _run(version: ModelVersion, arrays: Arrays, request: InferenceRequest) -> Arrays:
    """The model's outputs for one request, through its batcher."""
    batcher = version.batcher
    if not batcher.per_request:
        return await batcher.submit(arrays, _deadline(request))
    asked = tuple(output.name for output in request.outputs or ())
    return await batcher.submit(arrays, _deadline(request), parameters=request.parameters, outputs=asked,
                                request_id=request.id)


def _deadline(request: InferenceRequest) -> float | None:
    """The transport's deadline, tightened by a Triton-style ``timeout`` parameter (microseconds)."""
    timeout_us = request.parameters.get("timeout")
    if timeout_us is None:
        return request.deadline
    if not isinstance(timeout_us, int) or isinstance(timeout_us, bool) or timeout_us <= 0:
        raise InvalidInput("parameter 'timeout' must be a positive integer (microseconds)")
    own = time.monotonic() + timeout_us / 1e6
    return own if request.deadline is None else min(own, request.deadline)


def _conform(array: np.ndarray[Any, Any], spec: TensorSpec) -> np.ndarray[Any, Any]:
    """Cast an output to its declared datatype, so responses always match the metadata."""
    wanted = DATATYPES[spec.datatype]
    if spec.datatype == "BYTES" or array.dtype == wanted:
        return array
    return array.astype(wanted)


def _output(outputs: Arrays, name: str) -> np.ndarray[Any, Any]:
    try:
        return outputs[name]
    except KeyError:
        raise ServekitError(f"the model did not return its declared output {name!r}") from None


def _read_simple(version: ModelVersion, outputs: Arrays) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any] | None]:
    """Pick predictions and probabilities by config, else by datatype: integer/BYTES -> labels,
    a 2-D float output -> probabilities (argmax gives predictions when no label output)."""
    simple = version.config.simple
    specs = version.outputs
    label = simple.prediction_output or next(
        (s.name for s in specs if s.datatype.startswith(("INT", "UINT")) or s.datatype == "BYTES"), None)
    proba = simple.probability_output or next(
        (s.name for s in specs if s.datatype.startswith("FP") and len(s.shape) == 2), None)
    probabilities = outputs[proba] if proba else None
    if label:
        predictions = outputs[label]
    elif probabilities is not None:
        predictions = np.argmax(probabilities, axis=1)
    else:
        predictions = outputs[specs[0].name]
    return predictions, probabilities
