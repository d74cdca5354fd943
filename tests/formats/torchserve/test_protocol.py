"""Request decoding and answer encoding, checked against what the real TorchServe 0.12 did
(``torchserve_answers.json``: the echo handler answered with what it was given)."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import pytest

from servekit.errors import InvalidInput
from servekit.formats.torchserve.protocol import HandlerFailed, decode_request, encode_answer, media_type
from tests.formats.torchserve.mar import ANSWERS, require_torch

RECORDED: dict[str, dict[str, Any]] = {entry["name"]: entry for entry in json.loads(ANSWERS.read_text())["answers"]}
DECODED = sorted(name for name in RECORDED if name.startswith("decode_"))


def _request_body(entry: dict[str, Any]) -> bytes:
    request = entry["request"]
    if "body_base64" in request:
        return base64.b64decode(request["body_base64"])
    return str(request.get("body", "")).encode("utf-8")


def _as_recorded(value: Any) -> dict[str, Any]:
    """A value as the echo handler described it (bytes as latin-1 text)."""
    if isinstance(value, bytes | bytearray):
        return {"type": type(value).__name__, "value": value.decode("latin-1")}
    return {"type": type(value).__name__, "value": value}


def test_every_decoding_case_was_recorded() -> None:
    assert len(DECODED) >= 15


@pytest.mark.parametrize("name", DECODED)
def test_decoding_matches_torchserve(name: str) -> None:
    entry = RECORDED[name]
    seen = json.loads(entry["response"]["body"])
    headers = list(entry["request"]["headers"].items())
    content_type = entry["request"]["headers"].get("Content-Type")
    data, properties = decode_request(_request_body(entry), content_type, headers)
    assert {key: _as_recorded(value) for key, value in data.items()} == seen["row"]
    for key in data:  # each input's content type, as TorchServe reports it to the handler
        assert properties[key] == seen["headers"][key]
    assert properties["explain"] == seen["headers"]["explain"] == "False"
    for header, value in headers:  # request headers as the client spelled them
        assert properties[header] == seen["headers"][header] == value


def test_explain_property() -> None:
    _, properties = decode_request(b"x", "text/plain", explain=True)
    assert properties["explain"] == "True"


def test_a_broken_multipart_body_is_the_clients_error() -> None:
    with pytest.raises(InvalidInput, match="multipart"):
        decode_request(b"no boundary here", "multipart/form-data; boundary=zzz")


def test_repeated_form_field_keeps_the_last() -> None:
    data, _ = decode_request(b"a=1&a=2&b=", "application/x-www-form-urlencoded")
    assert data == {"a": bytearray(b"2"), "b": bytearray(b"")}


def test_media_type_drops_parameters() -> None:
    assert media_type("text/plain; charset=utf-8") == "text/plain"
    assert media_type(None) == ""


@pytest.mark.parametrize(("mode", "value"), [
    ("str", "plain text"),
    ("bytes", b"\x00\x01raw"),
    ("list", [1, 2.5, "x"]),
    ("int", 7),
    ("none", None),
    ("dict", {"a": 1, "b": [1, 2]}),
])
def test_encoding_matches_torchserve_byte_for_byte(mode: str, value: Any) -> None:
    recorded = RECORDED[f"return_{mode}"]["response"]
    body = base64.b64decode(recorded["body_base64"]) if "body_base64" in recorded else recorded["body"].encode()
    assert encode_answer(value) == body
    # TorchServe sends a Content-Type only when the handler set one
    assert "content-type" not in dict(recorded["headers"])


def test_a_tensor_is_encoded_as_torch_save_does() -> None:
    torch = require_torch()

    encoded = encode_answer(torch.tensor([1.0, 2.0]))
    assert torch.equal(torch.load(io.BytesIO(encoded)), torch.tensor([1.0, 2.0]))


def test_an_answer_json_cannot_hold_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        encode_answer({1, 2})


def test_handler_failed_carries_both_statuses() -> None:
    failed = HandlerFailed("handler raised ValueError: no")
    assert (failed.http_status, failed.grpc_code, failed.torchserve_status, failed.torchserve_message) == (
        500, "INTERNAL", 503, "Prediction failed")
    chosen = HandlerFailed("bad input", torchserve_status=400, torchserve_message="bad input", http_status=400)
    assert (chosen.http_status, chosen.grpc_code) == (400, "INVALID_ARGUMENT")
