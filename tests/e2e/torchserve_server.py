"""``servekit serve --model-store STORE [--models ...]`` started as a TorchServe user starts TorchServe
(no repository), and raw HTTP calls made as TorchServe's recording made them (``http.client``)."""

from __future__ import annotations

import base64
import http.client
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.formats.torchserve.mar import ANSWERS

from .harness import HOST
from .managed import ManagedServer

__all__ = ["RECORDED", "Answer", "TorchServeStyleServer", "call", "recorded_body"]

DOCUMENT: dict[str, Any] = json.loads(ANSWERS.read_text(encoding="utf-8"))
RECORDED: dict[str, dict[str, Any]] = {entry["name"]: entry for entry in DOCUMENT["answers"]}


class TorchServeStyleServer(ManagedServer):
    """No REPOSITORY: ``--model-store STORE`` and ``extra_args`` (e.g. ``--models``); the management
    API without a token, as TorchServe's answers were recorded (disable_token_authorization)."""

    def __init__(self, store: Path, log_path: Path, *extra_args: str) -> None:
        super().__init__(store, log_path, "--no-management-auth", *extra_args, token=None)
        self.args.remove(str(store))
        self.args += ["--model-store", str(store)]


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def call(port: int, method: str, path: str, body: str | bytes | None = None,
         headers: dict[str, str] | None = None, timeout: float = 60.0) -> Answer:
    """One request on a fresh connection, sent as the recording sent it (http.client)."""
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        connection.request(method, path, body=body.encode() if isinstance(body, str) else body,
                           headers=headers or {})
        response = connection.getresponse()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        connection.close()


def recorded_body(name: str) -> bytes:
    response = RECORDED[name]["response"]
    if "body_base64" in response:
        return base64.b64decode(response["body_base64"])
    return str(response["body"]).encode("utf-8")
