"""``servekit.serve(...)``: a server inside this Python process, for a notebook or a script.

    import servekit

    with servekit.serve("model.onnx", http_port=0) as server:
        print(server.url)          # http://127.0.0.1:PORT, answering /v2/... and /predict

The server (uvicorn and the serving core, gRPC too when ``grpc_port`` is given) runs on an event
loop of its own in a background thread, so the caller's thread (and a notebook's loop) stays
free. ``serve`` returns once the models are loaded and the port listens, or raises with the
reason; ``stop()`` (or leaving the ``with`` block) drains and unloads the models, then removes
the temporary repository a single model file was served from. Only the CLI's process-wide parts
are left out: no signal handlers, no metrics port, no management API (each can be asked for
by the settings, except the handlers: stop() is how this server stops).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import uvicorn

from servekit.config import ServerSettings, TensorConfig
from servekit.errors import ServekitError
from servekit.single_file import is_single_model, parse_tensor, remove, single_model, write_repository

__all__ = ["Server", "serve"]

START_TIMEOUT_S = 300.0


class Server:
    """A running in-process server; ``stop()`` ends it (idempotent)."""

    def __init__(self, settings: ServerSettings, temporary: Path | None = None) -> None:
        from servekit.http.app import create_app
        from servekit.http.protocol import http_protocol

        self.settings = settings
        self._temporary = temporary
        self._app = create_app(settings, serve_grpc=True, serve_management=True)
        config = uvicorn.Config(self._app, host=settings.host, port=settings.http_port, log_level=settings.log_level,
                                access_log=False, server_header=False, proxy_headers=False, lifespan="on",
                                http=http_protocol(), timeout_graceful_shutdown=math.ceil(settings.drain_timeout_s))
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="servekit-server", daemon=True)
        self.port = 0

    def _start(self, timeout_s: float) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive():
                self._cleanup()
                raise ServekitError(f"servekit could not start on {self.settings.host}:{self.settings.http_port}"
                                    " (see the log above: a taken port, or a model that failed to load)")
            if time.monotonic() > deadline:
                self.stop()
                raise ServekitError(f"servekit did not start within {timeout_s:g} s")
            time.sleep(0.02)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        if self._temporary is not None:  # one model, the caller's: a failed load is this call's failure
            failed = [row for row in self._app.state.dataplane.repository_index() if row.get("state") != "READY"]
            if failed:
                self.stop()
                raise ServekitError(f"model {failed[0]['name']} failed to load: {failed[0].get('reason', '')}")

    @property
    def url(self) -> str:
        """The HTTP base URL, e.g. ``http://127.0.0.1:8000``."""
        return f"{self.settings.scheme}://{self.settings.host}:{self.port}"

    def stop(self) -> None:
        """Stop accepting, let requests in flight finish, unload the models, remove what was made."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join()
        self._cleanup()

    def _cleanup(self) -> None:
        if self._temporary is not None:
            remove(self._temporary)
            self._temporary = None

    def __enter__(self) -> Server:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()


def serve(model: str | Path, *, name: str | None = None, max_batch_size: int | None = None,
          inputs: Sequence[str | TensorConfig] = (), outputs: Sequence[str | TensorConfig] = (),
          host: str = "127.0.0.1", http_port: int = 8000, grpc_port: int = 0,
          access_log: Literal["text", "json", "off"] = "off",
          timeout_s: float = START_TIMEOUT_S, **settings: Any) -> Server:
    """Serve ``model`` from this process and return once it answers.

    ``model``: a model file (``model.onnx``, ``model.pt``, ``model.skops``, ...), a handler
    (``handler.py:MyHandler``) or a repository folder. ``name``, ``max_batch_size``, ``inputs``
    and ``outputs`` (``"x:FP32:-1,4"`` or TensorConfig) are a single file's, as on the command
    line. ``http_port=0`` picks a free port (read it from ``.url``); ``grpc_port`` 0 serves no
    gRPC. ``settings``: any other ServerSettings field (``workers`` excepted: one process here).
    """
    if grpc_port:
        from servekit.grpc.available import GRPC_HINT, grpc_installed

        if not grpc_installed():
            raise ValueError(f"grpc_port={grpc_port}: serving gRPC needs the grpc extra: {GRPC_HINT}")
    if settings.get("workers", 1) != 1:
        raise ValueError("servekit.serve runs in this process: workers must be 1 (use `servekit serve` for more)")
    temporary: Path | None = None
    repository = Path(model)
    if is_single_model(model):
        specs = [[parse_tensor(t) if isinstance(t, str) else t for t in group] for group in (inputs, outputs)]
        single = single_model(model, name=name, max_batch_size=max_batch_size, inputs=specs[0], outputs=specs[1])
        repository = temporary = write_repository(single)
    elif name is not None or max_batch_size is not None or inputs or outputs:
        raise ValueError("name, max_batch_size, inputs and outputs apply to a single model file, not a repository")
    fields: dict[str, Any] = {"metrics_port": 0, "management_port": 0, **settings}
    try:
        server_settings = ServerSettings(repository=repository, host=host, http_port=http_port, grpc_port=grpc_port,
                                         access_log=access_log, **fields)
        server = Server(server_settings, temporary)
    except BaseException:
        if temporary is not None:
            remove(temporary)
        raise
    server._start(timeout_s)
    return server
