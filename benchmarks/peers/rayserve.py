"""Ray Serve: a local Ray instance (127.0.0.1, 2 CPUs, no dashboard) and one deployment with @serve.batch.

The launch is one Python script (``serve_app.py``, written into the scratch folder) that
starts Ray in-process with ``ray.init(address="local")``, starts Serve's HTTP proxy on
127.0.0.1 and the runner's port, deploys one replica whose ``__init__`` loads
``model_fn.Model`` and whose async ``__call__`` hands each request's inputs to a method
under ``@serve.batch`` (32 rows / 10 ms, the suite's setting), which stacks them and runs
``predict`` once; then it waits until it is stopped. A request is ``{"input": [[...]]}``
(each input by name, batch first), the answer ``{"probabilities": [[...]], "label": [0]}``.

Processes. Ray starts many (GCS, raylet, the log monitor, the dashboard agent, the
runtime-env agent, the Serve controller, proxy and replica workers); none leaves the
script's session, so the runner's stop (SIGTERM to the group, SIGKILL to whatever of the
session is left after 15 s) reaches them all. On SIGTERM they linger until the node is shut
down, so the script then calls ``ray.shutdown()`` (2 s at most), SIGKILLs what is left of
the processes it started, removes its temp dir and exits: a stop takes about 3 s.

Addresses. Every listening socket is on 127.0.0.1: ``ray.init`` turns a node IP of
127.0.0.1 into the machine's outward address, and its gRPC servers (GCS, raylet, every
worker) listen on all interfaces unless the node IP is 127.0.0.1; with
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (the single-machine mode Ray uses on macOS and
Windows) the node IP stays 127.0.0.1, and so do the agents' ports. The one exception Ray
has no setting for, the replica's inter-deployment gRPC server (``[::]:0``), is moved to
127.0.0.1 from inside the replica (``bind_replica_grpc_to_loopback``).

Logs. ``log_to_driver=False``: the workers' logs (the replica's access log included, one
line per request, as Serve writes by default) go to files in the temp dir only, not through
the driver into the runner's server.log. No usage stats (``RAY_USAGE_STATS_ENABLED=0``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from peers.base import MAX_BATCH_DELAY_MS, MAX_BATCH_SIZE, MODEL_FN, Launch, Peer, Workload

RAY_VERSION = "2.60.0"  # the version servekit's own ``ray`` extra is tested with
NUM_CPUS = 2
# Requests one replica may hold at once. Ray Serve's default (5) would cap every batch at 5
# rows, so it is raised past the batch size: 32 rows can wait in the batcher together.
MAX_ONGOING_REQUESTS = 2 * MAX_BATCH_SIZE

SCRIPT = '''\
"""Ray Serve for one workload: python serve_app.py WORKLOAD_FOLDER PORT (blocks until killed)."""

import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback

import numpy as np
import ray
from ray import serve

HERE = os.path.dirname(os.path.abspath(__file__))
FOLDER, PORT = sys.argv[1], int(sys.argv[2])
MAX_BATCH_SIZE, BATCH_WAIT_S, MAX_ONGOING = {max_batch_size}, {batch_wait_s}, {max_ongoing}


def bind_replica_grpc_to_loopback() -> None:
    """Ray Serve starts each replica's inter-deployment gRPC server on [::]:0 (every interface),
    with no setting to change it; have this replica's start it on 127.0.0.1 instead. It runs
    in the replica's process, before the replica starts that server (after __init__)."""
    try:
        from ray.serve._private import replica as replica_module

        original = replica_module.add_port_to_grpc_server
    except (ImportError, AttributeError):
        return

    def loopback(server, address):
        return original(server, address.replace("[::]", "127.0.0.1", 1))

    replica_module.add_port_to_grpc_server = loopback


@serve.deployment(num_replicas=1, max_ongoing_requests=MAX_ONGOING)
class Predictor:
    def __init__(self, here: str, folder: str) -> None:
        bind_replica_grpc_to_loopback()
        sys.path.insert(0, here)  # model_fn.py sits beside this script
        from model_fn import Model

        self.model = Model(folder)
        self.names = self.model.input_names

    @serve.batch(max_batch_size=MAX_BATCH_SIZE, batch_wait_timeout_s=BATCH_WAIT_S)
    async def run(self, requests: list) -> list:
        """Each request's inputs by name (batch first); stacks them, runs predict once, splits."""
        sizes = [len(request[self.names[0]]) for request in requests]
        stacked = {{name: np.concatenate([np.asarray(request[name]) for request in requests])
                   for name in self.names}}
        outputs = self.model.predict(stacked)
        answers, start = [], 0
        for size in sizes:
            answers.append({{name: value[start:start + size].tolist() for name, value in outputs.items()}})
            start += size
        return answers

    async def __call__(self, request) -> dict:
        return await self.run(await request.json())


def main() -> None:
    # Unix sockets live under the temp dir: keep its path short, and this run's own.
    temp_dir = tempfile.mkdtemp(prefix="rs", dir="/tmp")
    status = 0
    try:
        ray.init(address="local", num_cpus={num_cpus}, include_dashboard=False, _node_ip_address="127.0.0.1",
                 _temp_dir=temp_dir, logging_level=logging.WARNING, log_to_driver=False)
        # After ray.init, which installs a handler of its own: SIGTERM ends the wait below.
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
        serve.start(http_options={{"host": "127.0.0.1", "port": PORT}})
        serve.run(Predictor.bind(HERE, FOLDER), name="predictor", route_prefix="/predict")
        print(f"deployed on http://127.0.0.1:{{PORT}}/predict", flush=True)
        threading.Event().wait()  # until SIGTERM, SIGINT or SIGKILL
    except (SystemExit, KeyboardInterrupt):
        pass
    except BaseException:
        traceback.print_exc()
        status = 1
    # The runner's SIGTERM reached Ray's processes too, but they linger until the node is
    # shut down: shut it down, without waiting long on a GCS that is already going; then end
    # what is left of the processes Ray started, so that none writes into the temp dir after
    # it is gone, and leave without Ray's atexit shutdown (done; it would make the dir anew).
    stopper = threading.Thread(target=ray.shutdown, daemon=True)
    stopper.start()
    stopper.join(timeout=2)
    end_descendants(timeout_s=5)
    shutil.rmtree(temp_dir, ignore_errors=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def descendants() -> list:
    """PIDs of the live (not zombie) processes of this session that this one started, or
    that those started, and so on."""
    me, session = os.getpid(), os.getsid(0)
    parents, live = {{}}, set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{{entry}}/stat") as stat:
                    text = stat.read()
                fields = text[text.rindex(")") + 2:].split()  # state, ppid, pgrp, session, ...
                parents[int(entry)] = int(fields[1])
                if fields[0] != "Z" and int(fields[3]) == session:
                    live.add(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    mine, found = {{me}}, True
    while found:
        found = False
        for pid, parent in parents.items():
            if parent in mine and pid not in mine:
                mine.add(pid)
                found = True
    return sorted((mine - {{me}}) & live)


def end_descendants(timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while (left := descendants()) and time.monotonic() < deadline:
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


if __name__ == "__main__":
    main()
'''


def parse_json_outputs(body: bytes) -> dict[str, np.ndarray]:
    """``{"name": [[...]], ...}`` (what the deployment returns) as arrays by name."""
    return {name: np.asarray(value) for name, value in json.loads(body).items()}


def json_rows_body(workload: Workload) -> str:
    """The sample as ``{"input": [[...64 floats...]]}``: one nested list per input, batch first."""
    return json.dumps({name: array.tolist() for name, array in workload.sample().items()}, separators=(",", ":"))


class RayServePeer(Peer):
    name = "rayserve"
    version_of = "ray"
    requirements = (f"ray[serve]=={RAY_VERSION}",)

    def launch(self, python: Path, workload: Workload, workdir: Path, port: int) -> Launch:
        shutil.copy(MODEL_FN, workdir / "model_fn.py")
        script = workdir / "serve_app.py"
        script.write_text(SCRIPT.format(max_batch_size=MAX_BATCH_SIZE, batch_wait_s=MAX_BATCH_DELAY_MS / 1000,
                                        max_ongoing=MAX_ONGOING_REQUESTS, num_cpus=NUM_CPUS))
        base = f"http://127.0.0.1:{port}"
        env = {
            "RAY_USAGE_STATS_ENABLED": "0",
            # Ray turns a node IP of 127.0.0.1 into the machine's outward address, unless
            # "cluster" mode is off (as it is on macOS/Windows): then the node IP stays 127.0.0.1.
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            "RAY_DISABLE_DOCKER_CPU_WARNING": "1",
            "PYTHONUNBUFFERED": "1",
            "no_proxy": "*",
        }
        return Launch(
            command=[str(python), str(script), str(workload.folder), str(port)],
            url=f"{base}/predict", body=json_rows_body(workload),
            # 200 once the proxy has a route table with /predict in it (503 before); the runner
            # then also needs a 200 from /predict, which waits for the replica.
            ready_url=f"{base}/-/healthz", env=env, cwd=workdir, parse=parse_json_outputs,
            note=f"local Ray (num_cpus={NUM_CPUS}, no dashboard), 1 replica (max_ongoing_requests="
                 f"{MAX_ONGOING_REQUESTS}), @serve.batch max {MAX_BATCH_SIZE} / {MAX_BATCH_DELAY_MS} ms,"
                 " JSON rows through Serve's HTTP proxy",
        )
