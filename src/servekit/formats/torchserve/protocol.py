"""What a TorchServe handler sees of a request and what its answer becomes (pure: no I/O).

The rules are TorchServe 0.12's, checked against the real server (the recorded answers are in
``tests/formats/torchserve/torchserve_answers.json``):

Request -> one dict per request, ``{input name: value}``:
- a plain body is one input named ``body``; an ``application/x-www-form-urlencoded`` or
  ``multipart/form-data`` body is one input per form field, by field name (a repeated name:
  the last one);
- a value is decoded by its content type, parameters (``; charset=...``) dropped:
  exactly ``application/json`` -> the parsed JSON; ``text/...`` -> ``str`` (UTF-8);
  anything else, no content type, or a value that does not decode -> ``bytearray``.
  Urlencoded fields and multipart fields without a file name have no content type (so
  ``bytearray``, even when the part declares one); a file part keeps the part's type;
- the query string is not passed.

Request properties (``context.get_request_header``): the HTTP headers as the client sent them,
``{input name: {"content-type": type}}`` for each input, and ``explain``: ``"True"`` or
``"False"``.

Answer -> body bytes: ``bytes``/``bytearray`` as they are, ``str`` as UTF-8, a torch tensor as
``torch.save`` writes it, anything else as ``json.dumps(value, indent=2)``. TorchServe sends a
Content-Type only when the handler set one (``context.set_response_content_type``): a JSON
answer goes out with none at all.

Failures: TorchServe fails a whole batch with 503 ``Prediction failed`` when the handler raises,
503 ``Invalid model predict output`` when it does not return a list, 503 ``number of batch
response mismatched`` when the list's length is wrong, 507 ``Out of resources`` on a
MemoryError or CUDA error, and a ``PredictionException``'s own code and message.
``HandlerFailed`` carries those (``torchserve_status``, ``torchserve_message``) for the
TorchServe-style routes, while servekit's own protocols see a 500 (``ModelFailed``), or a
``PredictionException``'s own 4xx/5xx code.
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterable, Mapping
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any
from urllib.parse import unquote_to_bytes

from servekit.errors import InvalidInput, ModelFailed

__all__ = ["HandlerFailed", "decode_request", "decode_value", "encode_answer", "header_pairs", "media_type"]

BODY = "body"


class HandlerFailed(ModelFailed):
    """A request failed in the handler. ``http_status`` is servekit's status (500, or the
    4xx/5xx code of a ``PredictionException``); ``torchserve_status`` and ``torchserve_message``
    are what TorchServe answers, in its ``{"code", "type", "message"}`` body."""

    def __init__(self, message: str, torchserve_status: int = 503, torchserve_message: str = "Prediction failed",
                 http_status: int = 500) -> None:
        super().__init__(message)
        self.torchserve_status = torchserve_status
        self.torchserve_message = torchserve_message
        self.http_status = http_status
        self.grpc_code = "INVALID_ARGUMENT" if 400 <= http_status < 500 else "INTERNAL"


def media_type(content_type: str | None) -> str:
    """The media type alone: ``text/plain; charset=utf-8`` -> ``text/plain`` (case kept)."""
    return (content_type or "").split(";", 1)[0].strip()


def decode_value(raw: bytes, content_type: str) -> Any:
    """One input's value by its media type (see the module docstring)."""
    if content_type == "application/json":
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return bytearray(raw)
    if content_type.startswith("text"):
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return bytearray(raw)
    return bytearray(raw)


def decode_request(body: bytes, content_type: str | None, headers: Iterable[tuple[str, str]] = (),
                   *, explain: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """A request as a handler sees it: its data dict, and its properties (headers and per-input
    content types). Raises InvalidInput for a multipart body that cannot be parsed."""
    kind = media_type(content_type)
    fields: list[tuple[str, str, bytes]]  # (input name, its media type, its bytes)
    if kind == "application/x-www-form-urlencoded":
        fields = _urlencoded_fields(body)
    elif kind == "multipart/form-data":
        fields = _multipart_fields(body, content_type or "")
    else:
        fields = [(BODY, kind, body)]
    data = {name: decode_value(raw, field_type) for name, field_type, raw in fields}
    properties: dict[str, Any] = {name: {"content-type": field_type} for name, field_type, _ in fields}
    properties["explain"] = "True" if explain else "False"
    for name, value in headers:
        properties[name] = value
    return data, properties


def _urlencoded_fields(body: bytes) -> list[tuple[str, str, bytes]]:
    fields = []
    for pair in body.split(b"&"):
        if not pair:
            continue
        name, _, value = pair.partition(b"=")
        decoded_name = unquote_to_bytes(name.replace(b"+", b" ")).decode("utf-8", "replace")
        fields.append((decoded_name, "", unquote_to_bytes(value.replace(b"+", b" "))))
    return fields


def _multipart_fields(body: bytes, content_type: str) -> list[tuple[str, str, bytes]]:
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1", "replace")
    message = BytesParser(policy=HTTP).parsebytes(head + body)
    if not message.is_multipart() or message.defects:
        raise InvalidInput("the multipart/form-data body cannot be parsed (a boundary missing or wrong)")
    fields = []
    for part in message.iter_parts():
        if not isinstance(part, EmailMessage):
            continue
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            raise InvalidInput("a multipart/form-data part has no name in its Content-Disposition")
        payload = part.get_payload(decode=True)
        raw = payload if isinstance(payload, bytes) else b""
        has_file = part.get_filename() is not None
        fields.append((name, part.get_content_type() if has_file and "content-type" in part else "", raw))
    return fields


def encode_answer(item: Any) -> bytes:
    """One item of a handler's answer list as response bytes; TypeError when JSON cannot hold it."""
    if isinstance(item, bytes | bytearray):
        return bytes(item)
    if isinstance(item, str):
        return item.encode("utf-8")
    torch = sys.modules.get("torch")  # a tensor exists only if the handler imported torch
    if torch is not None and isinstance(item, torch.Tensor):
        buffer = io.BytesIO()
        torch.save(item, buffer)
        return buffer.getvalue()
    return json.dumps(item, indent=2).encode("utf-8")


def header_pairs(headers: Mapping[str, str] | Iterable[tuple[str, str]] | None) -> list[tuple[str, str]]:
    """Request headers given as a mapping or as pairs, as pairs of strings."""
    if headers is None:
        return []
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [(str(name), str(value)) for name, value in items]
