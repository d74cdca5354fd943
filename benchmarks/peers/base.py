"""What a peer server is to the comparison suite: how to install it, launch it, and ask it.

Adding a peer: benchmarks/peers/README.md.

A workload (``Workload``) is a model plus one request's worth of input, written by
``workloads.py`` into a folder with ``workload.json``. A peer (``Peer``) turns a workload
into a running server: it writes its own config and handler files into a scratch folder,
and returns a ``Launch``, the command to run and the one request to send. The runner
(``peers_compare.py``) owns the process: it starts the command in a new session, times
the cold start, checks one answer against the workload's expected output, drives the
load with wrk, samples CPU and memory, and stops the process group by PID.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from harness import free_port  # re-exported: the peers take their extra ports from here

__all__ = ["MODEL_FN", "Launch", "Peer", "TensorSpec", "Workload", "ensure_venv", "free_port", "parse_oip_json"]

# The one file of model code every peer's handler imports (copy it next to the handler).
MODEL_FN = Path(__file__).with_name("model_fn.py")

# Batching that every peer is configured with where it has a batcher (the setting).
MAX_BATCH_SIZE = 32
MAX_BATCH_DELAY_MS = 10


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str  # OIP name: "FP32", "INT64", ...
    shape: tuple[int, ...]  # one row's shape, without the batch dimension

    @property
    def numpy_dtype(self) -> np.dtype:
        return np.dtype({"FP32": "float32", "FP64": "float64", "INT64": "int64", "INT32": "int32"}[self.datatype])


@dataclass(frozen=True)
class Workload:
    """A model and one request's input (batch dimension 1), as ``workloads.py`` wrote them."""

    name: str  # "w1", "w2", "w3"
    title: str
    folder: Path  # holds workload.json, the model file, sample.npz (inputs) and expected.npz
    kind: str  # "onnx" or "sklearn"
    model_file: str  # relative to folder: "model.onnx" or "model.joblib"
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    atol: float  # how far a peer's output may be from expected.npz

    @classmethod
    def load(cls, folder: Path) -> Workload:
        meta = json.loads((folder / "workload.json").read_text())
        specs = lambda items: tuple(TensorSpec(i["name"], i["datatype"], tuple(i["shape"])) for i in items)  # noqa: E731
        return cls(meta["name"], meta["title"], folder.resolve(), meta["kind"], meta["model_file"],
                   specs(meta["inputs"]), specs(meta["outputs"]), float(meta["atol"]))

    @property
    def model_path(self) -> Path:
        return self.folder / self.model_file

    def sample(self) -> dict[str, np.ndarray]:
        """The request's input tensors, each with batch dimension 1, in ``inputs`` order."""
        with np.load(self.folder / "sample.npz") as data:
            return {spec.name: data[spec.name] for spec in self.inputs}

    def expected(self) -> dict[str, np.ndarray]:
        with np.load(self.folder / "expected.npz") as data:
            return {spec.name: data[spec.name] for spec in self.outputs}

    def oip_json_body(self) -> str:
        """The sample as an Open Inference Protocol JSON request (what Triton, MLServer and servekit take)."""
        tensors = [
            {"name": spec.name, "shape": list(array.shape), "datatype": spec.datatype,
             "data": array.reshape(-1).tolist()}
            for spec, array in zip(self.inputs, self.sample().values(), strict=True)
        ]
        return json.dumps({"inputs": tensors}, separators=(",", ":"))


@dataclass
class Launch:
    """A peer ready to start: the command, and the request the load generator sends."""

    command: list[str]
    url: str  # the inference URL wrk POSTs to
    body: str  # the request body (one row)
    ready_url: str  # GET answers 200 once the model can be asked
    content_type: str = "application/json"
    env: dict[str, str] = field(default_factory=dict)  # added to os.environ
    cwd: Path | None = None
    # Reads one response body; returns the output tensors by name (for the correctness check).
    parse: Callable[[bytes], dict[str, np.ndarray]] | None = None
    grpc_port: int | None = None  # where the peer serves the OIP gRPC API, if it does
    note: str = ""  # how this peer runs the workload, for the report (batching, workers, runtime)


class Peer:
    """One server under comparison. Subclasses set ``name``/``requirements`` and write ``launch``."""

    name: str = ""
    version_of: str = ""  # the PyPI distribution whose version the report prints
    requirements: tuple[str, ...] = ()  # pip requirement strings for the peer's own venv
    workloads: tuple[str, ...] = ("w1", "w2", "w3")  # which workloads it can serve
    own_venv: bool = True  # False: run in the interpreter running the suite (servekit itself)
    venv_name: str = ""  # the venv folder under the suite's venvs (default: ``name``); peers may share one

    def check_system(self) -> str | None:
        """Why this peer cannot run on this machine (a missing Java, say), or None."""
        return None

    def launch(self, python: Path, workload: Workload, workdir: Path, port: int) -> Launch:
        """Write config and handler files into ``workdir`` (empty, scratch) and say how to start.

        ``python`` is the interpreter of this peer's own venv. Bind 127.0.0.1 and ``port``
        only; use ``base.free_port()`` for any other port the server needs.
        """
        raise NotImplementedError


def parse_oip_json(body: bytes) -> dict[str, np.ndarray]:
    """Output tensors of an Open Inference Protocol JSON response, by name."""
    answer = json.loads(body)
    return {out["name"]: np.asarray(out["data"]).reshape(out["shape"]) for out in answer["outputs"]}


def ensure_venv(root: Path, peer: Peer, extra: tuple[str, ...] = ()) -> tuple[Path, float]:
    """The peer's venv under ``root`` with its requirements installed; (python, seconds spent).

    A venv whose recorded requirements match is reused as it is, so reruns start at once.
    A requirement in ``extra`` on a distribution the peer's own requirements also name is
    dropped: the peer's wins (PyTriton needs ``numpy<2`` whatever the suite pins).
    """
    venv = root / (peer.venv_name or peer.name)
    python = venv / "bin" / "python"
    own = {_distribution(requirement) for requirement in peer.requirements}
    wanted = sorted([*peer.requirements, *(pin for pin in extra if _distribution(pin) not in own)])
    stamp = venv / "servekit-requirements.json"
    if python.exists() and stamp.exists() and json.loads(stamp.read_text()) == wanted:
        return python, 0.0
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True)
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *wanted], check=True, env=env)
    stamp.write_text(json.dumps(wanted))
    return python, time.monotonic() - started


def _distribution(requirement: str) -> str:
    """The normalised distribution name a pip requirement string is about ("numpy<2" -> "numpy")."""
    import re

    return re.sub(r"[-_.]+", "-", re.split(r"[\s\[<>=!~;@]", requirement.strip(), maxsplit=1)[0]).lower()
