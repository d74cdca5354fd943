"""BentoML 1.x: a ``@bentoml.service`` class with one batchable ``@bentoml.api``, run by ``bentoml serve``.

(This module is not called ``bentoml.py``: it would shadow the package in the suite's imports.)

The launch writes ``service.py`` into the scratch folder: a service class with one worker
(``workers=1``) whose ``__init__`` loads ``model_fn.Model``, and a sync ``predict`` API
(run in the worker's thread pool, BentoML's default of one thread) marked
``batchable=True, max_batch_size=32, max_latency_ms=10000``.

Batching. BentoML's batcher is adaptive (its CORK dispatcher): it has no fixed queue delay
like the other peers' 10 ms, but holds requests as long as its fitted model of batch cost
and of past waits says it pays, up to 32 rows. ``max_latency_ms`` is not a delay either:
it is where BentoML sheds load, answering 503 to any request it expects to finish later
than that. At 1 s it shed W2 requests at 32 connections on a 2-core machine (p50 there is
about 1 s), so it is set to 10 s, out of the way: every peer queues, none sheds.

A request is one row, ``{"rows": [[...64 floats...]]}`` (BentoML stacks the requests'
arrays along axis 0 into one batch and splits the returned list back); the answer is a
list with one object per row, every output by name (``[{"probabilities": [...],
"label": 0}]`` for W1). A workload with several inputs (W2) takes ``{"rows": [{"input_ids":
[...], "attention_mask": [...]}]}`` instead: the API gets the list of rows and stacks each
input itself.

Processes and ports. ``bentoml serve`` is a circus arbiter that starts the worker; circus
puts every worker in a session of its own (``os.setsid``), out of reach of the runner's
sampling and its stop, both by session. So the command is ``serve_bentoml.py``, which runs
the same ``bentoml serve`` CLI with circus's ``setsid`` made a no-op: the worker stays in
the runner's session. It binds the HTTP port on 127.0.0.1; the arbiter's two control
sockets are on 127.0.0.1 too. No usage analytics (``BENTOML_DO_NOT_TRACK=true``);
``BENTOML_HOME`` is in the scratch folder, not ``~/bentoml``. ``/readyz`` answers 200 once
the service's ``__init__`` has run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from peers.base import MAX_BATCH_SIZE, MODEL_FN, Launch, Peer, Workload

BENTOML_VERSION = "1.4.40"
MAX_LATENCY_MS = 10_000
SERVICE_CLASS = "PeerService"

SERVICE = '''\
"""The BentoML service of one workload (written by benchmarks/peers/bentoml_peer.py)."""

import os
import sys
from typing import Annotated, Any

import bentoml
import numpy as np
from bentoml.validators import DType

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # model_fn.py sits beside this file
from model_fn import Model  # noqa: E402

FOLDER = {folder!r}


def by_row(outputs: dict, rows: int) -> list:
    """Outputs by name (batch first) as one object per row."""
    columns = {{name: value.tolist() for name, value in outputs.items()}}
    return [{{name: column[index] for name, column in columns.items()}} for index in range(rows)]


@bentoml.service(name="peer", workers=1)
class {service_class}:
    def __init__(self) -> None:
        self.model = Model(FOLDER)
        self.names = self.model.input_names
'''

SINGLE_INPUT_API = '''
    @bentoml.api(batchable=True, max_batch_size={max_batch_size}, max_latency_ms={max_latency_ms})
    def predict(self, rows: Annotated[np.ndarray, DType({dtype!r})]) -> list[dict[str, Any]]:
        """rows: the batch BentoML stacked from the requests' rows (axis 0)."""
        return by_row(self.model.predict({{self.names[0]: rows}}), len(rows))
'''

MULTI_INPUT_API = '''
    @bentoml.api(batchable=True, max_batch_size={max_batch_size}, max_latency_ms={max_latency_ms})
    def predict(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """rows: the requests' rows, each its inputs by name, in one list."""
        inputs = {{name: np.asarray([row[name] for row in rows]) for name in self.names}}
        return by_row(self.model.predict(inputs), len(rows))
'''


# ``bentoml serve`` runs a circus arbiter in its own process, and circus starts every worker
# with os.setsid(): the workers would leave the session the runner starts, so its CPU and
# memory sampling (by session) would miss them, and its last-resort SIGKILL (by session)
# would not reach them. This launcher runs the same ``bentoml serve`` CLI with circus's
# setsid() made a no-op, so the workers stay in the runner's session (and process group).
LAUNCHER = '''\
"""bentoml serve, its workers kept in this process's session (python serve_bentoml.py ARGS = bentoml ARGS)."""

import os
import sys
import types

import circus.process


class _KeepSession(types.ModuleType):
    """circus.process's view of os: all of os, except that setsid() does nothing."""

    def __getattr__(self, name):
        return getattr(os, name)

    @staticmethod
    def setsid():
        return None


circus.process.os = _KeepSession("os")

from bentoml_cli.cli import cli  # noqa: E402

sys.argv[0] = "bentoml"
sys.exit(cli())
'''


def parse_rows(body: bytes) -> dict[str, np.ndarray]:
    """``[{"name": value, ...}, ...]`` (one object per row) as arrays by name, batch first."""
    rows = json.loads(body)
    if not isinstance(rows, list):
        raise ValueError(f"not a list of rows: {body[:200]!r}")
    return {name: np.asarray([row[name] for row in rows]) for name in rows[0]}


def request_body(workload: Workload) -> str:
    sample = workload.sample()
    if len(sample) == 1:
        (array,) = sample.values()
        rows: object = array.tolist()
    else:
        rows = [{name: array[index].tolist() for name, array in sample.items()}
                for index in range(len(next(iter(sample.values()))))]
    return json.dumps({"rows": rows}, separators=(",", ":"))


class BentoMLPeer(Peer):
    name = "bentoml"
    version_of = "bentoml"
    requirements = (f"bentoml=={BENTOML_VERSION}",)

    def launch(self, python: Path, workload: Workload, workdir: Path, port: int) -> Launch:
        shutil.copy(MODEL_FN, workdir / "model_fn.py")
        (workdir / "serve_bentoml.py").write_text(LAUNCHER)
        api = SINGLE_INPUT_API if len(workload.inputs) == 1 else MULTI_INPUT_API
        source = SERVICE + api
        (workdir / "service.py").write_text(source.format(
            folder=str(workload.folder), service_class=SERVICE_CLASS, max_batch_size=MAX_BATCH_SIZE,
            max_latency_ms=MAX_LATENCY_MS, dtype=workload.inputs[0].numpy_dtype.name))
        base = f"http://127.0.0.1:{port}"
        env = {
            "BENTOML_DO_NOT_TRACK": "true",  # no usage analytics
            "BENTOML_HOME": str(workdir / "bentoml_home"),  # its stores and config, not ~/bentoml
            "PYTHONUNBUFFERED": "1",
        }
        return Launch(
            command=[str(python), str(workdir / "serve_bentoml.py"), "serve", f"service:{SERVICE_CLASS}",
                     "--host", "127.0.0.1", "--port", str(port)],
            url=f"{base}/predict", body=request_body(workload), ready_url=f"{base}/readyz", env=env, cwd=workdir,
            parse=parse_rows,
            note=f"bentoml serve, workers=1 (one thread), adaptive batching (CORK dispatcher, no fixed delay)"
                 f" max_batch_size={MAX_BATCH_SIZE}, max_latency_ms={MAX_LATENCY_MS} (its 503 threshold, out of the"
                 " way), JSON rows",
        )
