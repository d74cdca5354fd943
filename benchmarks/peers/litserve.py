"""LitServe (Lightning AI), with a LitAPI around model_fn and LitServe's own batching.

The server is one script written into the scratch folder (``litserve_server.py``, beside
a copy of ``model_fn.py``; not named ``litserve.py``, which would shadow the package). Its
LitAPI loads ``model_fn.Model`` in ``setup()``; ``decode_request`` takes one JSON request,
``{input name: one row as a nested list}`` (W1: ``{"input": [64 floats]}``), ``batch()``
stacks the rows, ``predict()`` runs the model once per batch, ``unbatch()`` splits the
outputs by row and ``encode_response`` answers ``{output name: one row as a list}``.
Batching is LitAPI(max_batch_size=32, batch_timeout=0.01).

Processes, all in the session the runner starts (none calls setsid): the launcher, the
multiprocessing manager that holds LitServe's request and response queues (it talks over
a Unix socket, not a TCP port), one inference worker (``workers_per_device=1`` on the
CPU, started with the spawn method) and one uvicorn API-server process (LitServe's
default ``num_api_servers`` equals the number of inference workers; forked). The HTTP
socket is bound by ``run(host="127.0.0.1")`` before the API server forks, and LitServe's
ZMQ transport (``fast_queue``) is left off, so nothing listens beyond 127.0.0.1:port.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from peers.base import MAX_BATCH_DELAY_MS, MAX_BATCH_SIZE, MODEL_FN, Launch, Peer, Workload

SERVER = '''\
"""LitServe server around benchmarks/peers/model_fn.py (written by peers/litserve.py).

    python litserve_server.py WORKLOAD_FOLDER PORT
"""

import os
import sys

import numpy as np

import litserve as ls

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from model_fn import Model  # noqa: E402

MAX_BATCH_SIZE = __MAX_BATCH_SIZE__
BATCH_TIMEOUT_S = __BATCH_TIMEOUT_S__


class ModelFnAPI(ls.LitAPI):
    def __init__(self, folder, **kwargs):
        super().__init__(**kwargs)
        self.folder = folder

    def setup(self, device):
        self.model = Model(self.folder)

    def decode_request(self, request):
        # One row per request: {input name: the row as a nested list, without a batch dimension}.
        return {name: np.asarray(request[name], dtype=dtype) for name, dtype in self.model.inputs}

    def batch(self, inputs):
        return {name: np.stack([row[name] for row in inputs]) for name in self.model.input_names}

    def predict(self, x):
        return self.model.predict(x)

    def unbatch(self, output):
        rows = len(next(iter(output.values())))
        return [{name: array[index] for name, array in output.items()} for index in range(rows)]

    def encode_response(self, output):
        return {name: value.tolist() for name, value in output.items()}


if __name__ == "__main__":
    folder, port = sys.argv[1], int(sys.argv[2])
    api = ModelFnAPI(folder, max_batch_size=MAX_BATCH_SIZE, batch_timeout=BATCH_TIMEOUT_S)
    server = ls.LitServer(api, accelerator="cpu", devices=1, workers_per_device=1)
    server.run(host="127.0.0.1", port=port, log_level="warning", generate_client_file=False)
'''


class LitServePeer(Peer):
    name = "litserve"
    version_of = "litserve"
    # Pulls fastapi, uvicorn and pyzmq; not torch (only imported for GPU/MPS detection and
    # torch tensors, neither of which an accelerator="cpu" numpy server reaches).
    requirements = ("litserve==0.2.19",)

    def launch(self, python: Path, workload: Workload, workdir: Path, port: int) -> Launch:
        shutil.copy(MODEL_FN, workdir / "model_fn.py")
        script = workdir / "litserve_server.py"
        script.write_text(SERVER.replace("__MAX_BATCH_SIZE__", str(MAX_BATCH_SIZE))
                          .replace("__BATCH_TIMEOUT_S__", str(MAX_BATCH_DELAY_MS / 1000)))
        body = {spec.name: array[0].tolist() for spec, array in zip(workload.inputs, workload.sample().values(),
                                                                     strict=True)}
        base = f"http://127.0.0.1:{port}"
        return Launch(
            command=[str(python), str(script), str(workload.folder), str(port)],
            url=f"{base}/predict",
            body=json.dumps(body, separators=(",", ":")),
            ready_url=f"{base}/health",
            parse=parse_answer,
            cwd=workdir,
            note=f"LitAPI calling model_fn, batching max {MAX_BATCH_SIZE} / {MAX_BATCH_DELAY_MS} ms, one inference"
                 " worker process + one uvicorn API-server process (LitServe's defaults for workers_per_device=1),"
                 " multiprocessing-queue transport (fast_queue off), JSON {input: row}",
        )


def parse_answer(body: bytes) -> dict[str, np.ndarray]:
    """``{output name: one row}`` -> arrays with the batch dimension of 1 put back."""
    return {name: np.asarray(value)[np.newaxis, ...] for name, value in json.loads(body).items()}
