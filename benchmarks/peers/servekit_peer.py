"""servekit itself, run from the interpreter running the suite (the project's own venv)."""

from __future__ import annotations

import shutil
from pathlib import Path

from peers.base import MAX_BATCH_DELAY_MS, MAX_BATCH_SIZE, Launch, Peer, Workload, free_port, parse_oip_json
from peers.triton_repository import write_python_repository


class ServekitPeer(Peer):
    name = "servekit"
    own_venv = False
    version_of = "servekit"

    def __init__(self, extra_args: tuple[str, ...] = (), extra_config: str = "", name: str = "") -> None:
        self.extra_args = extra_args
        self.extra_config = extra_config  # appended to every config.yaml (YAML, top-level keys)
        self.name = name or self.name

    def command(self, python: Path, repository: Path, port: int, grpc_port: int) -> list[str]:
        """``servekit serve`` on ``repository``, bound to 127.0.0.1, metrics and management off."""
        return [
            str(python), "-m", "servekit", "serve", str(repository),
            "--host", "127.0.0.1", "--http-port", str(port), "--grpc-port", str(grpc_port),
            "--metrics-port", "0", "--management-port", "0", "--log-level", "warning", *self.extra_args,
        ]

    def launch(self, python: Path, workload: Workload, workdir: Path, port: int) -> Launch:
        model_dir = workdir / "repository" / workload.name
        (model_dir / "1").mkdir(parents=True)
        if workload.kind == "onnx":
            shutil.copy(workload.model_path, model_dir / "1" / "model.onnx")
        else:
            shutil.copy(workload.folder / "model.skops", model_dir / "1" / "model.skops")
        (model_dir / "config.yaml").write_text(
            f"max_batch_size: {MAX_BATCH_SIZE}\n"
            f"batching:\n  max_queue_delay_ms: {MAX_BATCH_DELAY_MS}\n"
            + ("outputs:\n  - {name: probabilities, datatype: FP32, shape: [-1, 10]}\n"
               # The forest's trees are a type skops asks the owner to trust explicitly.
               "parameters:\n  trusted_types: [sklearn.tree._tree.Tree]\n"
               if workload.kind == "sklearn" else "")
            + self.extra_config
        )
        base = f"http://127.0.0.1:{port}"
        grpc_port = free_port()
        command = self.command(python, workdir / "repository", port, grpc_port)
        return Launch(
            command=command, url=f"{base}/v2/models/{workload.name}/infer", body=workload.oip_json_body(),
            ready_url=f"{base}/v2/health/ready", parse=parse_oip_json, grpc_port=grpc_port,
            note=f"HTTP and gRPC on one event loop per process, dynamic batching max {MAX_BATCH_SIZE}"
                 f" / {MAX_BATCH_DELAY_MS} ms, OIP JSON; {' '.join(self.extra_args)}".rstrip("; "),
        )


class ServekitTwoWorkersPeer(ServekitPeer):
    """servekit with ``--workers 2``: one process per core, sharing the HTTP and gRPC ports."""

    def __init__(self) -> None:
        super().__init__(extra_args=("--workers", "2"), name="servekit-2w")


class ServekitGrpcioPeer(ServekitPeer):
    """servekit with ``--grpc-frontend grpcio``: the gRPC port served by grpcio's asyncio server, as
    before the native front end (nghttp2, the default where it is built) existed; HTTP is the same."""

    def __init__(self) -> None:
        super().__init__(extra_args=("--grpc-frontend", "grpcio"), name="servekit-grpcio")


class ServekitTritonRepoPeer(ServekitPeer):
    """servekit serving the very repository ``triton-server`` serves (config.pbtxt, python-backend
    model.py): issue 13's comparison, where only the server differs."""

    def __init__(self, name: str = "servekit-triton-repo", parameters: dict[str, str] | None = None) -> None:
        super().__init__(name=name)
        self.parameters = parameters or {}  # config.pbtxt parameters servekit reads (Triton ignores them)

    def launch(self, python: Path, workload: Workload, workdir: Path, port: int) -> Launch:
        repository = write_python_repository(workload, workdir / "repository", self.parameters)
        base = f"http://127.0.0.1:{port}"
        grpc_port = free_port()
        command = self.command(python, repository, port, grpc_port)
        return Launch(
            command=command, url=f"{base}/v2/models/{workload.name}/infer", body=workload.oip_json_body(),
            ready_url=f"{base}/v2/health/ready", parse=parse_oip_json, grpc_port=grpc_port,
            note=f"the triton-server peer's repository (config.pbtxt, python backend model.py), dynamic batching"
                 f" max {MAX_BATCH_SIZE} / {MAX_BATCH_DELAY_MS} ms, one process, OIP JSON"
                 + "".join(f"; parameter {key}={value}" for key, value in self.parameters.items()),
        )


class ServekitTritonRepoIdlePeer(ServekitTritonRepoPeer):
    """The same repository with ``servekit.hold_when_idle: false``: an idle instance takes what is
    queued at once (servekit's rule for config.yaml models), instead of the adaptive hold that
    config.pbtxt models get by default."""

    def __init__(self) -> None:
        super().__init__(name="servekit-triton-repo-idle", parameters={"servekit.hold_when_idle": "false"})


class ServekitTritonRepoInlinePeer(ServekitTritonRepoPeer):
    """The same repository with ``servekit.execution: inline``: the python model's ``execute`` runs on
    the event loop (no hand-off to an instance thread and back); for a model that never blocks."""

    def __init__(self) -> None:
        super().__init__(name="servekit-triton-repo-inline", parameters={"servekit.execution": "inline"})
