"""The runtime of a TorchServe archive: its handler, run unchanged on servekit's batcher.

A per-request runtime (``Runtime.per_request``): each batch arrives as its client requests and
reaches the handler as TorchServe gives it, a list with one dict per request
(``servekit.formats.torchserve.protocol`` has the decoding rules). Each request is answered on
its own; a handler that raises, or answers with a list of the wrong length, fails the requests
of that batch only.

Tensors (the model's signature, so OIP metadata describes it):

- input ``body`` (BYTES, ``[-1]``): the client's body, one item per request;
- outputs ``body`` (BYTES): the answer's bytes; ``content_type`` (BYTES): the Content-Type the
  handler set, empty when it set none (TorchServe then sends no Content-Type); ``status``
  (INT32): the handler's ``context.set_response_status`` code, 200 by default; ``headers``
  (BYTES): a JSON object of the other response headers the handler set.

Request parameters (``RuntimeRequest.parameters``; an OIP client may send them too):

- ``content_type`` (str): the body's Content-Type; when absent, the ``content-type`` header;
- ``headers``: the request's HTTP headers, a mapping or ``[name, value]`` pairs; the handler
  reads them with ``context.get_request_header(idx, name)`` (any case);
- ``explain`` (bool): the request came to TorchServe's ``/explanations`` route.

``RuntimeRequest.id`` is ``context.get_request_id(idx)`` (a fresh UUID when the client gave none).
The manifest's ``modelVersion`` is the runtime's ``version_label``. torch, when the handler uses
it, runs with the intra-op threads ``servekit.formats.torchserve.threads`` chooses.

The archive folder is the version folder when it holds ``MAR-INF/MANIFEST.json`` (an archive
unpacked as version N of a servekit model), else the model folder. ``config.handler``, when
set, replaces the manifest's handler, as TorchServe's ``handler=`` registration parameter does.
"""

from __future__ import annotations

import json
import logging
import sys
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from servekit.errors import ConfigError, InvalidInput, ServekitError
from servekit.formats.torchserve.importer import ArchiveImports
from servekit.formats.torchserve.manifest import MANIFEST_PATH, parse_manifest, parse_model_yaml
from servekit.formats.torchserve.protocol import HandlerFailed, decode_request, encode_answer, header_pairs
from servekit.formats.torchserve.threads import TorchThreads
from servekit.formats.torchserve.ts import __version__ as TS_API_VERSION
from servekit.formats.torchserve.ts.context import Context, RequestProcessor
from servekit.formats.torchserve.ts.metrics.cache import HandlerMetrics
from servekit.formats.torchserve.ts.utils.util import PredictionException, list_classes_from_module
from servekit.runtimes.base import Arrays, Runtime, RuntimeContext, RuntimeRequest, Signature, imported_torch_gpus
from servekit.runtimes.placement import device_index, place_instance
from servekit.types import TensorSpec

__all__ = ["CONTENT_TYPE", "EXPLAIN", "HEADERS", "TorchServeRuntime", "archive_folder"]

log = logging.getLogger("servekit.torchserve")

CONTENT_TYPE = "content_type"
HEADERS = "headers"
EXPLAIN = "explain"

_SIGNATURE = Signature(
    inputs=(TensorSpec("body", "BYTES", (-1,)),),
    outputs=(TensorSpec("body", "BYTES", (-1,)), TensorSpec("content_type", "BYTES", (-1,)),
             TensorSpec("status", "INT32", (-1,)), TensorSpec("headers", "BYTES", (-1,))),
)

EntryPoint = Callable[[Any, Context], Any]


def archive_folder(context: RuntimeContext) -> Path:
    """The unpacked archive: the version folder when it holds MAR-INF, else the model folder."""
    if (context.version_dir / MANIFEST_PATH).is_file():
        return context.version_dir
    return context.model_dir


class TorchServeRuntime(Runtime):
    platform = "torchserve"
    per_request = True

    def load(self) -> None:
        ctx = self.context
        folder = archive_folder(ctx)
        manifest_path = folder / MANIFEST_PATH
        if not manifest_path.is_file():
            raise ConfigError(f"{folder}: no {MANIFEST_PATH}; a torchserve model is an unpacked TorchServe archive")
        manifest = parse_manifest(manifest_path.read_bytes(), manifest_path)
        self.version_label = manifest.model_version
        model_yaml: dict[str, Any] = {}
        device_ids: list[int] | None = None
        if manifest.config_file:
            config_path = folder / manifest.config_file
            model_yaml, settings = parse_model_yaml(config_path.read_bytes(), config_path)
            device_ids = settings.device_ids
        self._imports = ArchiveImports(folder)
        self._imports.open()
        try:
            entry, initialize = _entry_point(self._imports, ctx.config.handler or manifest.handler, folder)
            self.device = place_instance(ctx.config.device, ctx.instance, imported_torch_gpus())
            # deviceIds of model_config.yaml: TorchServe's workers take them round-robin, as servekit's instances.
            gpu_id = None if self.device == "cpu" else (
                device_ids[ctx.instance % len(device_ids)] if device_ids else device_index(self.device))
            if gpu_id is not None:
                self.device = f"cuda:{gpu_id}"
            context = Context(ctx.model_name, str(folder), manifest.raw, ctx.config.max_batch_size or 1, gpu_id,
                              TS_API_VERSION, metrics=HandlerMetrics(), model_yaml_config=model_yaml)
            context.import_archive_module = self._imports.import_module
            self._threads = TorchThreads(ctx.config.instances)
            self._threads.around_initialize(lambda: initialize(context))
        except ModuleNotFoundError as exc:
            self._imports.close()
            if exc.name == "torch":
                raise RuntimeError(f"the handler of {ctx.model_name!r} needs torch: pip install 'servekit[torch]'") \
                    from exc
            raise
        except BaseException:
            self._imports.close()
            raise
        self._entry = entry
        self._context = context

    def signature(self) -> Signature:
        return _SIGNATURE

    def predict(self, inputs: Arrays) -> Arrays:
        raise NotImplementedError("a TorchServe handler takes its batches as requests (predict_requests)")

    def predict_requests(self, requests: Sequence[RuntimeRequest]) -> list[Arrays | Exception]:
        self._threads.on_this_thread()
        answers: list[Arrays | Exception | None] = [None] * len(requests)
        rows: list[dict[str, Any]] = []
        processors: list[RequestProcessor] = []
        ids: dict[int, str] = {}
        positions: list[int] = []
        for position, request in enumerate(requests):
            try:
                data, properties = _decode(request)
            except ServekitError as exc:
                answers[position] = exc
                continue
            ids[len(rows)] = request.id or str(uuid.uuid4())
            rows.append(data)
            processors.append(RequestProcessor(properties))
            positions.append(position)
        if rows:
            for position, answer in zip(positions, self._run(rows, processors, ids), strict=True):
                answers[position] = answer
        return [answer for answer in answers if answer is not None]

    def _run(self, rows: list[dict[str, Any]], processors: list[RequestProcessor],
             ids: dict[int, str]) -> list[Arrays | Exception]:
        context = self._context
        context.request_ids, context.request_processor = ids, processors
        context.metrics.request_ids = ids
        try:
            result = self._entry(rows, context)
            if not isinstance(result, list):
                log.warning("model %s: the handler returned %s, not a list", context.model_name, type(result).__name__)
                return [HandlerFailed(f"the handler returned {type(result).__name__}, not a list of answers",
                                      torchserve_message="Invalid model predict output")] * len(rows)
            if len(result) != len(rows):
                log.warning("model %s: the handler answered %d of %d requests", context.model_name, len(result),
                            len(rows))
                return [HandlerFailed(f"the handler returned {len(result)} answers for a batch of {len(rows)} "
                                      "requests", torchserve_message="number of batch response mismatched")] * len(rows)
            return [_answer(item, processor) for item, processor in zip(result, processors, strict=True)]
        except Exception as exc:  # the handler's own failure: this batch only
            return [_failure(context.model_name, exc)] * len(rows)
        finally:
            context.request_ids = context.request_processor = None

    def unload(self) -> None:
        imports: ArchiveImports | None = getattr(self, "_imports", None)
        if imports is not None:
            imports.close()
        self._entry = None  # type: ignore[assignment]
        self._context = None  # type: ignore[assignment]
        torch = sys.modules.get("torch")
        if self.device.startswith("cuda") and torch is not None:
            torch.cuda.empty_cache()


def _entry_point(imports: ArchiveImports, spec: str, folder: Path) -> tuple[EntryPoint, Callable[[Context], Any]]:
    """TorchServe's rules: ``[path/]module[.py][:function]``; a module-level ``handle`` (or the named
    function) is called with ``(None, context)`` to initialize and ``(data, context)`` per batch;
    otherwise the module's one class is instantiated, its ``initialize`` and ``handle`` used. A
    module the archive lacks is looked up among the built-in handlers (``ts.torch_handler.NAME``)."""
    module_spec, _, function_name = spec.partition(":")
    stem = module_spec.rsplit("/", 1)[-1].removesuffix(".py")
    if imports.has_module(stem):
        module = imports.import_module(stem)
    else:
        try:
            module = imports.builtins["__import__"](f"ts.torch_handler.{stem}", None, None, ["_"], 0)
        except ModuleNotFoundError as exc:
            if not (exc.name or "").startswith("ts."):
                raise
            raise ConfigError(f"{folder}: handler {spec!r}: no {stem}.py in the archive, and no built-in TorchServe "
                              f"handler of that name in servekit (it has base_handler only)") from None
    function = getattr(module, function_name or "handle", None)
    if callable(function) and not isinstance(function, type):
        return function, lambda context: function(None, context)
    if function_name:
        raise ConfigError(f"{folder}: handler {spec!r}: {stem} has no function {function_name!r}")
    classes = list_classes_from_module(module)
    if len(classes) != 1:
        names = ", ".join(cls.__name__ for cls in classes) or "none"
        raise ConfigError(f"{folder}: handler {spec!r}: expected a handle() function or exactly one class in "
                          f"{stem}, found classes: {names}")
    service = classes[0]()
    if not callable(getattr(service, "handle", None)):
        raise ConfigError(f"{folder}: handler {spec!r}: class {classes[0].__name__} has no handle() method")
    initialize = getattr(service, "initialize", None)
    return service.handle, (initialize if callable(initialize) else (lambda context: None))


def _decode(request: RuntimeRequest) -> tuple[dict[str, Any], dict[str, Any]]:
    array = request.inputs.get("body")
    if array is None or array.dtype.kind not in ("O", "S", "U") or array.size != 1:
        raise InvalidInput("a TorchServe model takes one BYTES input named 'body' holding one item per request")
    body = array.reshape(-1)[0]
    if isinstance(body, str):
        body = body.encode("utf-8")
    params = request.parameters
    headers = header_pairs(params.get(HEADERS))
    content_type = params.get(CONTENT_TYPE)
    if content_type is None:
        content_type = next((value for name, value in headers if name.lower() == "content-type"), None)
    return decode_request(bytes(body), content_type, headers, explain=bool(params.get(EXPLAIN)))


def _answer(item: Any, processor: RequestProcessor) -> Arrays | Exception:
    try:
        body = encode_answer(item)
    except (TypeError, ValueError) as exc:
        return HandlerFailed(f"the handler's answer cannot be sent: {exc}",
                             torchserve_message="Unsupported model output data type.")
    set_headers = processor.get_response_headers()
    headers = {str(k): str(v) for k, v in set_headers.items()} if set_headers else {}
    content_type = headers.pop("content-type", "")
    return {
        "body": _bytes_item(body),
        "content_type": _bytes_item(content_type.encode("utf-8")) if content_type else _NO_BYTES,
        "status": np.array([int(processor.get_response_status_code())], dtype=np.int32),
        "headers": _bytes_item(json.dumps(headers).encode("utf-8")) if headers else _NO_HEADERS,
    }


def _bytes_item(value: bytes) -> np.ndarray[Any, Any]:
    array = np.empty(1, dtype=object)
    array[0] = value
    return array


# The usual answer sets neither: shared, never written to (outputs are only read downstream).
_NO_BYTES = _bytes_item(b"")
_NO_HEADERS = _bytes_item(b"{}")


def _failure(model: str, exc: Exception) -> HandlerFailed:
    if isinstance(exc, PredictionException):
        code = exc.error_code if isinstance(exc.error_code, int) else 500
        return HandlerFailed(str(exc.message), torchserve_status=code, torchserve_message=str(exc.message),
                             http_status=code if 400 <= code < 600 else 500)
    log.error("model %s: the handler failed", model, exc_info=exc)
    first_line = (str(exc).splitlines() or [""])[0][:300]
    message = f"handler raised {type(exc).__name__}: {first_line}"
    if isinstance(exc, MemoryError) or "CUDA" in str(exc):
        return HandlerFailed(message, torchserve_status=507, torchserve_message="Out of resources")
    return HandlerFailed(message)



