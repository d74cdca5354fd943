"""MLServer (Seldon's Open Inference Protocol server), with a custom runtime around model_fn.

The workload is served as one model with a small ``MLModel`` subclass (``runtime.py``,
written into the scratch folder beside a copy of ``model_fn.py``): ``load()`` builds
``model_fn.Model`` on the workload folder and ``predict()`` decodes the OIP inputs with
MLServer's ``NumpyCodec``, runs the model once, and encodes every output (W1's FP32
``probabilities`` and INT64 ``label`` alike). MLServer's adaptive batching is on
(``max_batch_size`` 32, ``max_batch_time`` 10 ms): it merges queued requests along the
first dimension before ``predict`` and splits the answer again.

``parallel_workers`` is left at MLServer's own default, 1: the model then runs in one
inference worker process that MLServer spawns, while the main process keeps the HTTP
and gRPC servers (the layout a user gets without tuning). Prometheus metrics are off
(``metrics_endpoint`` null), as servekit runs with ``--metrics-port 0`` in this suite.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from peers.base import MAX_BATCH_DELAY_MS, MAX_BATCH_SIZE, MODEL_FN, Launch, Peer, Workload, free_port, parse_oip_json

# MLServer's own default; parallel inference spawns this many worker processes.
PARALLEL_WORKERS = 1

RUNTIME = '''\
"""MLServer runtime that answers with benchmarks/peers/model_fn.py (written by peers/mlserver.py)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from mlserver import MLModel  # noqa: E402
from mlserver.codecs import NumpyCodec  # noqa: E402
from mlserver.types import InferenceRequest, InferenceResponse  # noqa: E402

from model_fn import Model  # noqa: E402


class ModelFnRuntime(MLModel):
    async def load(self) -> bool:
        self._model = Model(self.settings.parameters.extra["workload_folder"])
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        inputs = {tensor.name: NumpyCodec.decode_input(tensor) for tensor in payload.inputs}
        outputs = self._model.predict(inputs)
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            outputs=[_encode(name, array) for name, array in outputs.items()],
        )


def _encode(name, array):
    # NumpyCodec turns a 1-D output ([batch]) into [batch, 1]; keep the model's own shape.
    output = NumpyCodec.encode_output(name, array)
    output.shape = list(array.shape)
    return output
'''


class MLServerPeer(Peer):
    name = "mlserver"
    version_of = "mlserver"
    # mlserver 1.7.1 is the newest release. With uvloop 0.23 its inference worker dies at start
    # ("There is no current event loop in thread MainThread"), so uvloop stays at 0.21.
    requirements = ("mlserver==1.7.1", "uvloop==0.21.0")

    def launch(self, python: Path, workload: Workload, workdir: Path, port: int) -> Launch:
        model_dir = workdir / workload.name
        model_dir.mkdir(parents=True)
        shutil.copy(MODEL_FN, model_dir / "model_fn.py")
        (model_dir / "runtime.py").write_text(RUNTIME)
        (model_dir / "model-settings.json").write_text(json.dumps({
            "name": workload.name,
            "implementation": "runtime.ModelFnRuntime",
            "max_batch_size": MAX_BATCH_SIZE,
            "max_batch_time": MAX_BATCH_DELAY_MS / 1000,
            "parameters": {"extra": {"workload_folder": str(workload.folder)}},
        }, indent=2) + "\n")
        grpc_port = free_port()
        (workdir / "settings.json").write_text(json.dumps({
            "debug": False,
            "host": "127.0.0.1",
            "http_port": port,
            "grpc_port": grpc_port,
            "metrics_port": free_port(),  # unused while metrics are off; never the default 8082
            "metrics_endpoint": None,
            "parallel_workers": PARALLEL_WORKERS,
            "environments_dir": str(workdir / ".envs"),
            "metrics_dir": str(workdir / ".metrics"),
        }, indent=2) + "\n")
        base = f"http://127.0.0.1:{port}"
        return Launch(
            command=[str(python.parent / "mlserver"), "start", str(workdir)],
            url=f"{base}/v2/models/{workload.name}/infer",
            body=workload.oip_json_body(),
            ready_url=f"{base}/v2/models/{workload.name}/ready",
            parse=parse_oip_json,
            cwd=workdir,
            grpc_port=grpc_port,
            note=f"custom MLModel runtime calling model_fn, adaptive batching max {MAX_BATCH_SIZE} /"
                 f" {MAX_BATCH_DELAY_MS} ms, parallel_workers={PARALLEL_WORKERS} (MLServer's default: one"
                 " inference worker process beside the HTTP/gRPC process), metrics off, OIP JSON",
        )
