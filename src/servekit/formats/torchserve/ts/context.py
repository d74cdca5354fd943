"""``ts.context``: what a TorchServe handler is given (``Context``) and each request's headers
and response settings (``RequestProcessor``).

Same constructor and methods as TorchServe 0.12's, so handlers, and handler unit tests that
build a Context themselves, run unchanged. One deliberate difference: request header names
are matched without regard to case. TorchServe matches them as the client spelled them, and
servekit's HTTP server (like every HTTP/2 peer) sees them lower-cased; a handler asking for
``X-Mode`` therefore finds what TorchServe would have found, and more.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import Any

__all__ = ["Context", "RequestProcessor"]


class RequestProcessor:
    """One request's properties (its headers, and per input ``{name: {"content-type": ...}}``),
    and the status, phrase and headers its response will carry."""

    def __init__(self, request_header: Mapping[str, Any]) -> None:
        self._request_header = dict(request_header)
        self._lowered: dict[str, Any] | None = None  # built on the first lookup that needs it
        self._status_code = 200
        self._reason_phrase: str | None = None
        self._response_header: dict[str, str] = {}

    def get_request_property(self, key: str) -> Any:
        if key in self._request_header:
            return self._request_header[key]
        if self._lowered is None:
            self._lowered = {str(name).lower(): value for name, value in self._request_header.items()}
        return self._lowered.get(key.lower())

    def get_request_properties(self) -> dict[str, Any]:
        return self._request_header

    def report_status(self, code: int, reason_phrase: str | None = None) -> None:
        self._status_code = code
        self._reason_phrase = reason_phrase

    def get_response_status_code(self) -> int:
        return self._status_code

    def get_response_status_phrase(self) -> str | None:
        return self._reason_phrase

    def add_response_property(self, key: str, value: str) -> None:
        self._response_header[key] = value

    def get_response_headers(self) -> dict[str, str]:
        return self._response_header

    def get_response_header(self, key: str) -> str | None:
        return self._response_header.get(key)


class Context:
    """Load-time facts (``manifest``, ``system_properties``, ``model_yaml_config``, ``metrics``) and,
    while a batch runs, its requests (``request_ids``, ``request_processor``: one per request)."""

    def __init__(self, model_name: str, model_dir: str, manifest: Mapping[str, Any], batch_size: int,
                 gpu: int | None, mms_version: str, limit_max_image_pixels: bool = True, metrics: Any = None,
                 model_yaml_config: Mapping[str, Any] | None = None) -> None:
        self.model_name = model_name
        self.manifest = manifest
        self._system_properties: dict[str, Any] = {
            "model_dir": model_dir,
            "gpu_id": gpu,
            "batch_size": batch_size,
            "server_name": "MMS",
            "server_version": mms_version,
            "limit_max_image_pixels": limit_max_image_pixels,
        }
        self.request_ids: dict[int, str] | None = None
        self.request_processor: Sequence[RequestProcessor] | None = None
        self.metrics = metrics
        self.model_yaml_config: Mapping[str, Any] = model_yaml_config or {}
        self.stopping_criteria: Any = None
        # servekit: imports a module of the archive by its name (the default BaseHandler loads
        # --model-file with it); None outside servekit's runtime.
        self.import_archive_module: Callable[[str], ModuleType] | None = None

    @property
    def system_properties(self) -> dict[str, Any]:
        return self._system_properties

    def _processor(self, idx: int) -> RequestProcessor:
        if self.request_processor is None:
            raise RuntimeError("no request is being handled: request headers exist only inside handle()")
        return self.request_processor[idx]

    def get_request_id(self, idx: int = 0) -> str | None:
        return None if self.request_ids is None else self.request_ids.get(idx)

    def get_request_header(self, idx: int, key: str) -> Any:
        return self._processor(idx).get_request_property(key)

    def get_all_request_header(self, idx: int) -> dict[str, Any]:
        return self._processor(idx).get_request_properties()

    def set_response_content_type(self, idx: int, value: str) -> None:
        self.set_response_header(idx, "content-type", value)

    def get_response_content_type(self, idx: int) -> str | None:
        return self.get_response_headers(idx).get("content-type")

    def get_response_status(self, idx: int) -> tuple[int, str | None]:
        processor = self._processor(idx)
        return processor.get_response_status_code(), processor.get_response_status_phrase()

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None:
        if self.request_processor is not None:
            self.request_processor[idx].report_status(code, phrase)

    def set_all_response_status(self, code: int = 200, phrase: str = "") -> None:
        for processor in self.request_processor or ():
            processor.report_status(code, phrase)

    def get_response_headers(self, idx: int) -> dict[str, str]:
        return self._processor(idx).get_response_headers()

    def set_response_header(self, idx: int, key: str, value: str) -> None:
        self._processor(idx).add_response_property(key, value)

    def get_sequence_id(self, idx: int) -> Any:
        return self.get_request_header(idx, "ts_request_sequence_id")
