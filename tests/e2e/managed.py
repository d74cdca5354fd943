"""A real server with its management API on a free port, and the models the management tests use."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.gate import GATE_HANDLER_CODE

from .harness import HOST, ServerProcess, free_port

__all__ = ["TOKEN", "ManagedServer", "serve_folder", "wait_until", "write_versioned_model"]

TOKEN = "e2e-management-token-0123456789"

VERSIONED_HANDLER = '''
import time

import numpy as np

from servekit import BaseHandler
''' + GATE_HANDLER_CODE + '''

class Versioned(BaseHandler):
    def initialize(self, context):
        super().initialize(context)
        marker = context.parameters.get("marker")
        if marker:  # one line per instance loaded: a test counts reloads
            with open(marker, "a", encoding="utf-8") as out:
                out.write(f"{context.version}\\n")

    def inference(self, data):
        wait_at_gate(self.context.parameters.get("gate"), data["x"][:, 0])
        time.sleep(float(self.context.parameters.get("delay_s", 0)))
        return {"v": np.full((len(data["x"]), 1), self.context.version, dtype=np.int64)}
'''


def write_versioned_model(model_dir: Path, versions: tuple[int, ...], **config: Any) -> Path:
    """A handler model answering each row with the number of the version that ran it (INT64 ``v``)."""
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "handler.py").write_text(VERSIONED_HANDLER, encoding="utf-8")
    document = {
        "max_batch_size": 8,
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 1]}],
        "outputs": [{"name": "v", "datatype": "INT64", "shape": [-1, 1]}],
        **config,
    }
    (model_dir / "config.yaml").write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    for version in versions:
        (model_dir / str(version)).mkdir(exist_ok=True)
    return model_dir


class ManagedServer(ServerProcess):
    """``servekit serve`` with the management API on its own free port (bearer ``token``, or a generated
    one when ``token`` is None)."""

    def __init__(self, repository: Path, log_path: Path, *extra_args: str, token: str | None = TOKEN) -> None:
        self.management_port = free_port()
        own = ["--management-port", str(self.management_port)]
        if token is not None:
            own += ["--management-token", token]
        super().__init__(repository, log_path, *own, *extra_args)
        self.token = token

    @property
    def management_url(self) -> str:
        return f"http://{HOST}:{self.management_port}"

    def management(self, token: str | None = None, timeout: float = 30.0) -> httpx.Client:
        chosen = token or self.token
        headers = {"Authorization": f"Bearer {chosen}"} if chosen else {}
        return httpx.Client(base_url=self.management_url, headers=headers, timeout=timeout)

    def infer(self, client: httpx.Client, model: str, parameters: dict[str, Any] | None = None) -> httpx.Response:
        body: dict[str, Any] = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [0.0]}]}
        if parameters:
            body["parameters"] = parameters
        return client.post(f"{self.base_url}/v2/models/{model}/infer", json=body)


def wait_until(check: Any, timeout_s: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def serve_folder(folder: Path) -> Iterator[str]:
    """``folder`` over plain HTTP on a free loopback port; yields its base URL."""
    server = http.server.ThreadingHTTPServer((HOST, 0), partial(_Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{HOST}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
