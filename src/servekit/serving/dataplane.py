"""The data plane: the one transport-agnostic entry point behind HTTP and gRPC.

Transports decode wire bytes into InferenceRequest, call a method here (or on the simple
API, ``servekit.serving.simple``, which runs over this one) and encode what comes back;
they never reach the registry. Every decision about models, versions, validation and
errors is made here or below (registry, batcher), never in a transport. Each inference
request is recorded here, once (metrics and the access log,
``servekit.observability.requests``), under the protocol its transport names; the response
cache sits here, before the batcher.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from servekit import __version__
from servekit.batching.rolling import WINDOW_S
from servekit.cache import ResponseCache
from servekit.codecs.table import is_table, table_columns
from servekit.errors import InvalidInput, ModelNotReady, ServekitError
from servekit.observability import request_ids
from servekit.observability.metrics import Protocol
from servekit.observability.requests import RequestObservation
from servekit.serving import status, triton
from servekit.serving.control import RepositoryControl
from servekit.serving.registry import Registry
from servekit.serving.traffic import routing_key
from servekit.serving.version import LoadState, ModelVersion
from servekit.types import DATATYPES, Arrays, InferenceRequest, InferenceResponse, ModelMetadata, Tensor, TensorSpec

__all__ = ["EXTENSIONS", "DataPlane"]

EXTENSIONS = ("binary_tensor_data", "model_repository", "statistics", "model_configuration", "schedule_policy")


def _check_tensor(spec: TensorSpec, tensor: Tensor) -> None:
    if tensor.datatype != spec.datatype:
        raise InvalidInput(f"input {tensor.name!r} has datatype {tensor.datatype}; the model expects {spec.datatype}")
    shape, wanted = tensor.shape, spec.shape
    if shape == wanted:
        return
    if len(shape) != len(wanted) or any(want != -1 and want != got for want, got in zip(wanted, shape, strict=True)):
        raise InvalidInput(f"input {tensor.name!r} has shape {list(shape)}; the model expects {list(spec.shape)}")


class DataPlane:
    """The Open Inference Protocol and its repository extension over one registry.

    ``started`` is set once start-up loading has finished and ``stopping`` once the server
    drains (both by ``ServingCore``); ``cache`` answers models whose config enables it.
    """

    def __init__(self, registry: Registry, cache: ResponseCache | None = None,
                 control: RepositoryControl | None = None) -> None:
        self._registry = registry
        self.cache = cache
        self.control = control or RepositoryControl("open")
        self.started = False
        self.stopping = False

    # -- health and metadata -------------------------------------------------

    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        """Ready once start-up loading finished; a broken model does not hold the server back."""
        return self.started and not self.stopping

    def server_metadata(self) -> dict[str, Any]:
        return {"name": "servekit", "version": __version__, "extensions": list(EXTENSIONS)}

    def model_names(self) -> list[str]:
        """Every registered model, by name."""
        return self._registry.model_names()

    def model_metadata(self, name: str, version: str | None = None) -> ModelMetadata:
        chosen = self._registry.resolve(name, version)
        entry = self._registry.entry(name)
        versions = tuple(str(v) for v, mv in sorted(entry.versions.items()) if mv.state is LoadState.READY)
        return ModelMetadata(chosen.name, versions, chosen.platform, chosen.inputs, chosen.outputs)

    def model_inputs(self, name: str, version: str | None = None) -> tuple[TensorSpec, ...]:
        """The declared inputs of the version ``model_metadata`` describes (404 unknown, 503 not
        ready), without building the whole document."""
        return self._registry.resolve(name, version).inputs

    def model_ready(self, name: str, version: str | None = None) -> bool:
        """Whether the model (version) answers now; ModelNotFound when there is no such model."""
        try:
            self._registry.resolve(name, version)
        except ModelNotReady:
            return False
        return True

    def require_model(self, name: str, version: str | None = None) -> None:
        """Raise what ``infer`` would for a model or version that cannot answer (404 unknown, 503
        not ready), so that a transport can refuse a request before it reads its body."""
        self._registry.resolve(name, version)

    def model_config(self, name: str, version: str | None = None) -> dict[str, Any]:
        return triton.model_config(self._registry.resolve(name, version))

    def model_statistics(self, name: str | None = None, version: str | None = None) -> dict[str, Any]:
        registry = self._registry
        if name is None:
            chosen = [mv for n in registry.model_names() for mv in registry.entry(n).versions.values()]
        elif version:
            chosen = [registry.resolve(name, version)]
        else:
            chosen = list(registry.entry(name).versions.values())
        return {"model_stats": [triton.model_statistics(mv) for mv in chosen]}

    def status(self) -> dict[str, Any]:
        """The status page's snapshot: whether the server is ready, the seconds its live figures
        cover, and one row per model version (``servekit.serving.status.model_rows``)."""
        return {"ready": self.ready(), "window_s": WINDOW_S,
                "models": status.model_rows(self._registry, time.perf_counter_ns())}

    # -- the repository extension ----------------------------------------------

    def repository_index(self) -> list[dict[str, str]]:
        """One row per model version (``name``, ``version``, ``state``, ``reason``)."""
        return self._registry.index()

    async def load_model(self, name: str, authorization: str | None = None) -> None:
        """(Re)load a model from its folder; only new and changed versions load. ``authorization``:
        the caller's Authorization value, checked by ``control`` (401/403)."""
        self.control.check(authorization)
        await self._registry.load(name)

    async def unload_model(self, name: str, authorization: str | None = None) -> None:
        """Stop serving a model: new requests get 503, in-flight ones finish (``authorization``: as
        for ``load_model``)."""
        self.control.check(authorization)
        await self._registry.unload(name)

    # -- inference -------------------------------------------------------------

    async def infer(self, request: InferenceRequest, protocol: Protocol = "internal") -> InferenceResponse:
        """Validate against the model's signature, answer from the cache or run through the
        batcher, select outputs. ``protocol`` names the transport in metrics and the access log.
        The request id (``servekit.observability.request_ids``) is settled here: the client's
        ``x-request-id``, else ``request.id``, else a fresh one. The answer's ``id`` stays
        ``request.id`` (none when the request had none, as Triton answers)."""
        with self.observe(protocol, request.model_name, request_ids.ensure(request.id)) as seen:
            version = self.route(request.model_name, request.model_version, routing_key(request.parameters))
            return await self.answer(version, request, seen)

    def observe(self, protocol: Protocol, model: str, request_id: str | None = None) -> RequestObservation:
        """The observation that records one request (metrics, access log) when its block ends."""
        return RequestObservation(protocol, model, request_id, self._registry.model_names)

    def rejections(self, protocol: Protocol, model: str) -> RequestObservation:
        """A context for a transport's decoding of one request: a request it rejects there (a body
        that does not parse, an unknown model) is recorded like one the data plane answered."""
        return RequestObservation(protocol, model, None, self._registry.model_names, rejections_only=True)

    def route(self, name: str, version: str | None = None, key: str | None = None) -> ModelVersion:
        """The version a request runs on: the named one, else the traffic split's pick (sticky
        per ``key``), else the default version. 404 unknown, 503 not ready."""
        return self._registry.route(name, version, key)

    async def answer(self, version: ModelVersion, request: InferenceRequest,
                     seen: RequestObservation) -> InferenceResponse:
        """Run ``request`` on the routed ``version``, recorded in ``seen`` (from ``observe``)."""
        seen.resolved(version.name, str(version.version))
        started = time.perf_counter_ns()
        ok = False
        try:
            arrays = _validated_inputs(version, request)
            wanted = _requested_outputs(version, request)
            if self.cache is not None and version.config.cache.enabled:
                outputs = await self._cached_answer(self.cache, version, arrays, request, seen)
            else:
                outputs = await _run(version, arrays, request)
            ok = True
        finally:
            version.stats.record_request(ok, started, time.perf_counter_ns())
        specs = version.output_by_name
        tensors = [Tensor.from_array(name, _conform(_output(outputs, name), specs[name])) for name in wanted]
        # A model whose settings name its version (MLServer's parameters.version) answers under that name.
        answered_as = version.config.version_label or str(version.version)
        return InferenceResponse(request.model_name, answered_as, tensors, id=request.id)

    async def _cached_answer(self, cache: ResponseCache, version: ModelVersion, arrays: Arrays,
                             request: InferenceRequest, seen: RequestObservation) -> Arrays:
        """The cache's answer to these inputs, else the model's (which is then cached)."""
        asked = time.perf_counter_ns()
        key = cache.key(version.name, version.version, version.generation, arrays, request.parameters)
        cached = await cache.get(key)
        lookup_ns = time.perf_counter_ns() - asked
        version.stats.record_cache(cached is not None, lookup_ns)
        seen.cached(cached is not None)
        if cached is not None:
            seen.cache_timed(True, lookup_ns)
            return cached
        store_ns = 0
        try:
            outputs = await _run(version, arrays, request)
            declared = {spec.name: outputs[spec.name] for spec in version.outputs if spec.name in outputs}
            storing = time.perf_counter_ns()
            await cache.put(key, declared, version.config.cache.ttl_s)
            store_ns = time.perf_counter_ns() - storing
        finally:
            seen.cache_timed(False, lookup_ns + store_ns)
        return outputs


def _validated_inputs(version: ModelVersion, request: InferenceRequest) -> Arrays:
    """The request's arrays by input name, in the model's input order, each checked against its spec;
    or, for a table (``ModelConfig.table_input``), its columns by name (``servekit.codecs.table``)."""
    specs = version.input_by_name
    tensors = request.inputs
    table_input = version.config.table_input
    if table_input != "never" and is_table(table_input, request.parameters):  # one input per column, any names
        return table_columns(tensors)
    if version.config.any_input:
        return _the_only_input(version, tensors)
    if len(tensors) == len(specs):  # the usual request: every input, in the model's order
        arrays: Arrays = {}
        for tensor, spec in zip(tensors, specs.values(), strict=True):
            if tensor.name != spec.name:
                break
            _check_tensor(spec, tensor)
            arrays[spec.name] = tensor.data
        else:
            return arrays
    given = {tensor.name: tensor for tensor in tensors}
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


def _the_only_input(version: ModelVersion, tensors: list[Tensor]) -> Arrays:
    """A one-input ``any_input`` model's input: the request's only tensor, whatever its name; a numeric
    datatype other than the declared one is cast to it (MLServer's SKLearnModel decodes any as numpy)."""
    (spec,) = version.inputs
    if len(tensors) != 1:
        raise InvalidInput(f"model {version.name!r} takes exactly one input; the request has {len(tensors)}")
    tensor = tensors[0]
    data = tensor.data
    if tensor.datatype != spec.datatype and "BYTES" not in (tensor.datatype, spec.datatype):
        data = data.astype(DATATYPES[spec.datatype])
        tensor = Tensor(tensor.name, spec.datatype, tensor.shape, data)
    _check_tensor(spec, tensor)
    return {spec.name: data}


def _requested_outputs(version: ModelVersion, request: InferenceRequest) -> list[str]:
    names = [spec.name for spec in version.outputs]
    if not request.outputs:
        return list(version.config.default_outputs or names)
    asked = [output.name for output in request.outputs]
    unknown = [name for name in asked if name not in names]
    if unknown:
        raise InvalidInput(f"model {version.name!r} has no output named {', '.join(map(repr, unknown))}; "
                           f"its outputs are {', '.join(names)}")
    return asked


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
