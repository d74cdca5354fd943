"""NVIDIA Triton Inference Server, CPU only, through PyTriton (the PyPI wheel ``nvidia-pytriton``).

The wheel carries a CPU-capable ``tritonserver`` binary with one backend, Triton's Python
backend; PyTriton binds a Python callable as a Triton model through it (the backend's
stub process forwards each batch over ZeroMQ/shared memory to the callable in the
server script's own process). Triton itself does the HTTP/gRPC front end (C++), the
request parsing and the dynamic batching; the callable runs ``model_fn.Model.predict``
on each batch, as every other peer does.

Triton's dynamic batcher waits out ``max_queue_delay_microseconds`` unless the batch fills
(or reaches a preferred size), so at one connection every request pays the full 10 ms:
measured here, w1 at 1 connection went from ~4 ms p50 with delay 0 to ~16 ms with 10 ms.

The wheel has no onnxruntime backend (``pytriton/tritonserver/backends/`` holds ``python``
only), so Triton's native C++ path for ``model.onnx`` cannot be measured from PyPI.

The Python backend's stub (``triton_python_backend_stub``, one per Python version in the
wheel) is linked against ``libpython3.X.so.1.0`` and finds it through the dynamic loader,
while it runs the venv's standard library. Where the venv's Python is not the system one
(pyenv's 3.11.7 here, Debian's libpython3.11 is 3.11.2) the two disagree and the model
fails to load (``'_thread.RLock' object has no attribute '_recursion_count'``), so the
launch puts the venv interpreter's own LIBDIR first on ``LD_LIBRARY_PATH``.

numpy: the Python backend's stub is built with a pybind11 that reads numpy 1.x's
``PyArray_Descr`` layout; under numpy 2 it gets output byte sizes wrong and Triton answers
500 "output tensor shape does not match size of output" (seen with 0.5.7, the newest
release whose metadata allows numpy 2). 0.6 and later say ``numpy<2``, so this peer asks
for that, and ``base.ensure_venv`` lets it override the suite's numpy pin; onnxruntime,
scikit-learn and joblib keep the suite's versions.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from peers.base import (
    MAX_BATCH_DELAY_MS,
    MAX_BATCH_SIZE,
    Launch,
    Peer,
    TensorSpec,
    Workload,
    free_port,
    parse_oip_json,
)

# Written into the workdir and run with the peer venv's python; filled in with str.format.
SERVER_SCRIPT = '''\
"""Serves one workload with PyTriton (written by benchmarks/peers/triton.py)."""

import logging
import sys

import numpy as np

sys.path.insert(0, {workdir!r})

from model_fn import Model  # noqa: E402
from pytriton.decorators import batch  # noqa: E402
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor  # noqa: E402
from pytriton.triton import Triton, TritonConfig  # noqa: E402

logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")

INPUTS = {inputs!r}  # name, numpy dtype, one row's shape
OUTPUTS = {outputs!r}

model = Model({folder!r})


@batch
def infer(**inputs):
    outputs = model.predict(inputs)
    # Triton wants at least one dimension per row: a scalar per row goes out as [1].
    return {{name: np.ascontiguousarray(outputs[name]).reshape(len(outputs[name]), *(shape or [1]))
             for name, _, shape in OUTPUTS}}


config = TritonConfig(
    http_address="127.0.0.1", http_port={http_port}, grpc_address="127.0.0.1", grpc_port={grpc_port},
    allow_metrics=False, log_verbose=0,
)
with Triton(config=config, workspace={workspace!r}) as triton:
    triton.bind(
        model_name={name!r},
        infer_func=infer,
        inputs=[Tensor(name=name, dtype=np.dtype(dtype), shape=tuple(shape) or (1,)) for name, dtype, shape in INPUTS],
        outputs=[Tensor(name=name, dtype=np.dtype(dtype), shape=tuple(shape) or (1,))
                 for name, dtype, shape in OUTPUTS],
        config=ModelConfig(
            max_batch_size={max_batch_size},
            batcher=DynamicBatcher(max_queue_delay_microseconds={delay_us}),
        ),
        strict=False,
    )
    triton.serve()
'''


class TritonPeer(Peer):
    name = "triton"
    version_of = "nvidia-pytriton"
    requirements = ("nvidia-pytriton==0.7.0", "numpy<2")

    def launch(self, python: Path, workload: Workload, workdir: Path, port: int) -> Launch:
        shutil.copy(Path(__file__).with_name("model_fn.py"), workdir / "model_fn.py")
        grpc_port = free_port()
        script = workdir / "serve_triton.py"
        script.write_text(SERVER_SCRIPT.format(
            workdir=str(workdir), folder=str(workload.folder), name=workload.name,
            inputs=_specs(workload.inputs), outputs=_specs(workload.outputs),
            http_port=port, grpc_port=grpc_port, workspace=str(workdir / "workspace"),
            max_batch_size=MAX_BATCH_SIZE, delay_us=MAX_BATCH_DELAY_MS * 1000,
        ))
        base = f"http://127.0.0.1:{port}"
        return Launch(
            env=_libpython_env(python),
            command=[str(python), str(script)],
            url=f"{base}/v2/models/{workload.name}/infer",
            body=workload.oip_json_body(),
            ready_url=f"{base}/v2/models/{workload.name}/ready",
            cwd=workdir,
            parse=parse_oip_json,
            grpc_port=grpc_port,
            note=f"PyTriton (tritonserver + Python backend, one model instance), dynamic batching max"
                 f" {MAX_BATCH_SIZE} / {MAX_BATCH_DELAY_MS} ms (Triton holds even a lone request for the"
                 f" whole delay), OIP JSON; model_fn runs in the PyTriton process",
        )


def _specs(tensors: tuple[TensorSpec, ...]) -> list[tuple[str, str, list[int]]]:
    """(name, numpy dtype name, one row's shape) per tensor, as the server script reads them."""
    return [(spec.name, spec.numpy_dtype.name, list(spec.shape)) for spec in tensors]


def _libpython_env(python: Path) -> dict[str, str]:
    """``LD_LIBRARY_PATH`` with ``python``'s own libpython directory first, when it has one."""
    probe = ("import sysconfig; print(sysconfig.get_config_var('Py_ENABLE_SHARED') or 0,"
             " sysconfig.get_config_var('LIBDIR') or '', sep='|')")
    completed = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    shared, _, libdir = completed.stdout.strip().partition("|")
    if shared != "1" or not libdir:
        return {}
    current = os.environ.get("LD_LIBRARY_PATH", "")
    return {"LD_LIBRARY_PATH": libdir + (":" + current if current else "")}
