"""TorchServe (PyTorch's model server): a Java (Netty) frontend, Python worker processes.

The handler is a plain module with ``handle(data, context)``: per batch the frontend
hands it, it stacks every request's JSON rows into one array per input, calls
``model_fn.Model.predict`` once, and answers each request with its own rows as JSON.
It is packaged with ``torch-model-archiver --archive-format no-archive`` (a folder in
the model store), and registered at start through ``load_models`` and the ``models=``
JSON of config.properties, which carries the batching (batchSize 32, maxBatchDelay
10 ms) and the worker count.

``torchserve --start --foreground`` stays in the foreground and starts the Java frontend
as its child (``subprocess.Popen``, same session), and the frontend starts the Python
workers as its children: the runner's killpg over the session reaches all of them.

Readiness: TorchServe has no HTTP URL that stays non-200 until a worker has loaded the
model. ``/ping`` answers 500 only for a worker in recovery (0.12's ``WorkerThread.isHealthy``
is true from the moment the worker thread exists), and the management API's
``GET /models/{name}`` is 200 once the model is registered, before any worker is up. So the
ready URL is ``/ping``, and what gates the cold start is the runner's first inference
request, which the frontend queues until the worker has loaded the model and answers then.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np

from peers.base import MAX_BATCH_DELAY_MS, MAX_BATCH_SIZE, MODEL_FN, Launch, Peer, Workload, free_port

__all__ = ["TorchServePeer"]

MIN_JAVA = 17

# The worker-side handler. {folder} is the workload folder, written in as a literal.
HANDLER = '''\
"""TorchServe handler around model_fn.Model: one predict per batch, one JSON answer per request."""

import json

import numpy as np

from model_fn import Model

FOLDER = {folder!r}
_model = None


def _rows(request):
    body = request.get("body")
    if body is None:
        body = request.get("data")
    if isinstance(body, (bytes, bytearray)):
        body = json.loads(body)
    return body


def handle(data, context):
    global _model
    if _model is None:
        _model = Model(FOLDER)
    if data is None:  # TorchServe calls the entry point once with no data to initialise it
        return None
    bodies = [_rows(request) for request in data]
    counts = [len(body[_model.input_names[0]]) for body in bodies]
    batch = {{
        name: np.concatenate([np.asarray(body[name], dtype=dtype) for body in bodies])
        for name, dtype in _model.inputs
    }}
    outputs = _model.predict(batch)
    answers = []
    start = 0
    for index, count in enumerate(counts):
        answer = {{name: value[start:start + count].tolist() for name, value in outputs.items()}}
        answers.append(json.dumps(answer, separators=(",", ":")))
        context.set_response_content_type(index, "application/json")
        start += count
    return answers
'''


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")  # what `torchserve --start` itself runs
    return f"{java_home}/bin/java" if java_home else "java"


def java_major_version() -> int | None:
    """The major version `java -version` reports (8 for "1.8.0_x"), or None without a java."""
    try:
        completed = subprocess.run([_java(), "-version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', completed.stderr + completed.stdout)
    if completed.returncode != 0 or not match:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


class TorchServePeer(Peer):
    name = "torchserve"
    version_of = "torchserve"
    # 0.12.0 is TorchServe's last release. torch: the CPU wheel on this machine's disk (an
    # unpinned torch pulls a CUDA build of several GB); TorchServe's worker imports torch
    # even for a handler that never uses it.
    requirements = ("torchserve==0.12.0", "torch-model-archiver==0.12.0", "pyyaml==6.0.4", "torch==2.13.0")

    # One worker, not TorchServe's one per core: measured on this 2-core box (quiet machine,
    # wrk on the same cores, 32 connections), 2 workers gave 1.6-1.8k req/s on W1 against
    # 2.1-3.0k for 1, 1.6-2.2k on W3 against 2.3-2.6k, and ~280 MiB more RSS; 1 connection
    # was the same either way (the 10 ms batch delay dominates).

    def __init__(self, workers: int = 1) -> None:
        self.workers = workers

    def check_system(self) -> str | None:
        major = java_major_version()
        if major is None:
            return f"TorchServe's frontend needs Java {MIN_JAVA}+, and `{_java()} -version` did not run"
        if major < MIN_JAVA:
            return f"TorchServe's frontend needs Java {MIN_JAVA}+, `{_java()} -version` reports {major}"
        return None

    def launch(self, python: Path, workload: Workload, workdir: Path, port: int) -> Launch:
        bin_dir = python.parent
        source = workdir / "handler"
        source.mkdir()
        (source / "ts_handler.py").write_text(HANDLER.format(folder=str(workload.folder)))
        shutil.copy(MODEL_FN, source / "model_fn.py")
        store = workdir / "model_store"
        store.mkdir()
        archived = subprocess.run(
            [str(bin_dir / "torch-model-archiver"), "--model-name", workload.name, "--version", "1.0",
             "--handler", str(source / "ts_handler.py"), "--extra-files", str(source / "model_fn.py"),
             "--export-path", str(store), "--archive-format", "no-archive"],
            capture_output=True, text=True, timeout=120,
        )
        if archived.returncode != 0:
            raise RuntimeError(f"torch-model-archiver failed: {(archived.stderr or archived.stdout).strip()[-500:]}")
        models = {workload.name: {"1.0": {
            "defaultVersion": True, "marName": workload.name,
            "minWorkers": self.workers, "maxWorkers": self.workers,
            "batchSize": MAX_BATCH_SIZE, "maxBatchDelay": MAX_BATCH_DELAY_MS, "responseTimeout": 120,
        }}}
        properties = {
            "inference_address": f"http://127.0.0.1:{port}",
            "management_address": f"http://127.0.0.1:{free_port()}",
            "metrics_address": f"http://127.0.0.1:{free_port()}",
            # gRPC is always on in TorchServe; move it off its fixed 7070/7071.
            "grpc_inference_address": "127.0.0.1", "grpc_inference_port": str(free_port()),
            "grpc_management_address": "127.0.0.1", "grpc_management_port": str(free_port()),
            "model_store": str(store),
            "load_models": workload.name,
            "models": json.dumps(models, separators=(",", ":")),
            "default_workers_per_model": str(self.workers),
            "disable_token_authorization": "true",
            "install_py_dep_per_model": "false",
            # The once-a-minute system metrics collector (a Python process per tick); local
            # only, but it would land CPU in some runs and not others.
            "disable_system_metrics": "true",
        }
        config = workdir / "config.properties"
        config.write_text("".join(f"{key}={value}\n" for key, value in properties.items()))
        command = [
            str(bin_dir / "torchserve"), "--start", "--foreground", "--ncs", "--disable-token-auth",
            "--model-store", str(store), "--ts-config", str(config),
        ]
        base = f"http://127.0.0.1:{port}"
        body = {spec.name: array.tolist() for spec, array in zip(workload.inputs, workload.sample().values(),
                                                                 strict=True)}
        return Launch(
            command=command, url=f"{base}/predictions/{workload.name}",
            body=json.dumps(body, separators=(",", ":")),
            # 200 once the frontend listens; the first prediction waits for the worker (see above).
            ready_url=f"{base}/ping",
            env=_environment(workdir), cwd=workdir, parse=_parse,
            note=f"{self.workers} Python worker{'s' if self.workers != 1 else ''}"
                 f" (default_workers_per_model={self.workers}; TorchServe's own default is one per core),"
                 f" Java frontend, batching batchSize {MAX_BATCH_SIZE} / maxBatchDelay {MAX_BATCH_DELAY_MS} ms"
                 " (a lone request waits out the delay), custom handler (one predict per batch), JSON rows,"
                 " default logging, system metrics collector off",
        )


def _environment(workdir: Path) -> dict[str, str]:
    """Keeps TorchServe's temp files in ``workdir``, so two instances never share them.

    ``torchserve --start`` refuses to start while the pid file in Python's temp dir
    (TMPDIR) names a live TorchServe; the frontend puts its worker sockets
    (``.ts.sock.9000``) and unpacked models under Java's temp dir, which it takes from TEMP.
    A Unix socket path has a 108-byte limit, so a deep ``workdir`` keeps Java's /tmp.
    Logs (access, model, metrics) go to workdir/logs.
    """
    env = {"TMPDIR": str(workdir), "LOG_LOCATION": str(workdir / "logs"), "METRICS_LOCATION": str(workdir / "logs")}
    if len(str(workdir / ".ts.sock.65535")) < 100:
        env["TEMP"] = str(workdir)
    return env


def _parse(body: bytes) -> dict[str, np.ndarray]:
    return {name: np.asarray(value) for name, value in json.loads(body).items()}
