"""NVIDIA Triton Inference Server, CPU only: the ``tritonserver`` binary itself, run directly.

The ``nvidia-pytriton`` wheel carries a CPU-capable ``tritonserver`` (C++ HTTP and gRPC front
ends, dynamic batcher) with one backend, Triton's python backend. PyTriton (``triton.py``)
puts a ZeroMQ hop and a second Python process behind it; this peer does not: it runs the
binary on a model repository (``triton_repository.py``: config.pbtxt with dynamic batching
max 32 / 10 ms and one CPU instance, a python-backend ``model.py`` over ``model_fn``), which
is how Triton is run in production. The same repository is what
``servekit_peer.ServekitTritonRepoPeer`` serves.

What the binary needs from this venv (found by trying, 2026-12-03):

- a backend folder ``backends/python`` with links to the wheel's ``libtriton_python.so``,
  ``triton_python_backend_utils.py`` and the stub for the venv's Python
  (``python_backend_stubs/3.X/triton_python_backend_stub``), passed as ``--backend-directory``;
- ``LD_LIBRARY_PATH`` starting with the venv interpreter's ``LIBDIR``: the stub links
  ``libpython3.X.so.1.0`` (see ``triton.py`` for why the system one will not do), then the
  wheel's bundled libraries;
- the venv's ``bin`` first on ``PATH``: the stub finds its site-packages (numpy,
  onnxruntime) through the ``python3`` it finds there.

Triton's dynamic batcher waits out the whole 10 ms delay for a lone request, so the
1-connection rows show it. Same requirements (and ``numpy<2`` for the stub) as ``triton.py``.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from peers.base import MAX_BATCH_DELAY_MS, MAX_BATCH_SIZE, Launch, Peer, Workload, free_port, parse_oip_json
from peers.triton import _libpython_env
from peers.triton_repository import write_python_repository

__all__ = ["TritonServerPeer"]


class TritonServerPeer(Peer):
    name = "triton-server"
    version_of = "nvidia-pytriton"
    requirements = ("nvidia-pytriton==0.7.0", "numpy<2")
    venv_name = "triton"  # the same wheel as the PyTriton peer: one venv for both

    def launch(self, python: Path, workload: Workload, workdir: Path, port: int) -> Launch:
        repository = write_python_repository(workload, workdir / "repository")
        dist, python_version = _pytriton_dist(python)
        backends = workdir / "backends"
        (backends / "python").mkdir(parents=True)
        for source in (dist / "backends" / "python" / "libtriton_python.so",
                       dist / "backends" / "python" / "triton_python_backend_utils.py",
                       dist / "python_backend_stubs" / python_version / "triton_python_backend_stub"):
            (backends / "python" / source.name).symlink_to(source)
        grpc_port = free_port()
        env = _libpython_env(python)
        libs = dist.parent.parent / "nvidia_pytriton.libs"
        env["LD_LIBRARY_PATH"] = ":".join(p for p in (env.get("LD_LIBRARY_PATH", ""), str(libs)) if p)
        env["PATH"] = f"{python.parent}:{os.environ.get('PATH', '')}"
        command = [
            str(dist / "bin" / "tritonserver"), f"--model-repository={repository}",
            f"--backend-directory={backends}", "--http-address=127.0.0.1", f"--http-port={port}",
            "--grpc-address=127.0.0.1", f"--grpc-port={grpc_port}", "--allow-metrics=false",
            "--allow-gpu-metrics=false", "--allow-cpu-metrics=false", "--log-verbose=0", "--exit-on-error=true",
            # A region name of its own: another Triton on this machine must not share its shared memory.
            f"--backend-config=python,shm-region-prefix-name=servekit_bench_{port}_",
        ]
        base = f"http://127.0.0.1:{port}"
        return Launch(
            env=env, command=command, url=f"{base}/v2/models/{workload.name}/infer", body=workload.oip_json_body(),
            ready_url=f"{base}/v2/models/{workload.name}/ready", cwd=workdir, parse=parse_oip_json,
            grpc_port=grpc_port,
            note=f"tritonserver binary run directly (C++ front ends), python backend model.py over model_fn, one"
                 f" CPU instance, dynamic batching max {MAX_BATCH_SIZE} / {MAX_BATCH_DELAY_MS} ms (a lone request"
                 f" waits the whole delay), OIP JSON",
        )


def _pytriton_dist(python: Path) -> tuple[Path, str]:
    """(the wheel's ``pytriton/tritonserver`` folder, "3.X" of ``python``), asked of the venv's python."""
    probe = ("import importlib.util, sys, pathlib;"
             " spec = importlib.util.find_spec('pytriton');"
             " print(pathlib.Path(spec.origin).parent / 'tritonserver',"
             " f'{sys.version_info[0]}.{sys.version_info[1]}')")
    completed = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    folder, version = completed.stdout.split()
    return Path(folder), version
