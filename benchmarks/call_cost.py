"""What one request costs servekit's Python, per transport, without sockets: microseconds per call.

    python benchmarks/call_cost.py --calls 20000 --rounds 3
    python benchmarks/call_cost.py --profile grpc-infer     # cProfile of one path: call counts, per-call cost
    python benchmarks/call_cost.py --compare-src /tmp/before/src   # the same in a copy of src/, alternating
    python benchmarks/call_cost.py --model triton-python --concurrency 1   # the python backend, one at a time

One process builds a model behind a real ServingCore, then calls each transport's own
entry point the way its server does, with one row of 64 FP32 per request. ``--model``:

- ``digits`` (default): the demo repository's ONNX MLP (dynamic batching max 32 / 2 ms,
  inline execution as ``auto`` picks it);
- ``triton-python``: the same MLP as the Triton python-backend repository the peers
  comparison serves (``benchmarks/peers/triton_repository.py``: config.pbtxt with dynamic
  batching max 32 / 10 ms, a model.py that concatenates a batch's requests, runs onnxruntime
  once and answers each request); ``--execution`` sets its ``servekit.execution`` parameter.

The paths:

- ``grpc-infer``: the ModelInfer method handler servekit registers with grpc.aio (request
  bytes in, the response's serializer applied), with a stand-in for grpc's call context;
- ``grpc-predict``: the same for ``modelserving.ModelService/Predict``;
- ``http-infer`` / ``http-predict``: the ASGI hot routes (``HotRoutes``) with an OIP JSON
  body / a /predict body, ASGI ``receive``/``send`` stand-ins;
- ``http-wire``: the OIP JSON request as bytes, fed to servekit's HTTP protocol (uvicorn's
  httptools protocol as ``servekit serve`` runs it, over servekit's app) on one keep-alive
  connection per call in flight, with a stand-in transport: what the server's Python does
  between the socket's bytes in and out;
- ``plane-infer``: ``DataPlane.infer`` itself with a decoded request (no transport);
- ``runtime-batch``: no server at all: a second instance of the model's runtime, called on
  batches of ``--concurrency`` requests (a per-request runtime's ``predict_requests``, else
  ``predict`` on the merged rows); the figure is that thread's CPU per request.

Calls go ``--concurrency`` at a time (default 32, as a loaded server sees them: they batch),
and the figure is CPU time over calls of the event loop's thread plus the model's instance
threads (a model not run inline computes there): the Python work of decoding, the data plane, the
batcher, the model and encoding, but not grpc's C core, uvicorn's parsing, the kernel, or the
threads onnxruntime starts. Where instance threads did work, the split is printed too.
It is a tool to compare code (``--compare-src`` runs a copy of ``src/`` in a second process,
alternating rounds), not a server's throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

PATHS = ("grpc-infer", "grpc-predict", "http-infer", "http-predict", "http-wire", "plane-infer", "runtime-batch")
MODELS = ("digits", "triton-python")
# What each model serves by default: the simple API (Predict, /predict) needs one output to read.
DEFAULT_PATHS = {"digits": PATHS[:5],
                 "triton-python": ("runtime-batch", "plane-infer", "http-infer", "http-wire", "grpc-infer")}
HERE = Path(__file__).resolve().parent


class _Context:
    """The parts of grpc.aio's ServicerContext servekit's handlers use."""

    def time_remaining(self) -> None:
        return None

    def invocation_metadata(self) -> tuple[()]:
        return ()

    def set_trailing_metadata(self, metadata: Any) -> None:
        pass

    async def abort(self, code: Any, message: str) -> None:
        raise RuntimeError(f"aborted: {code} {message}")


class _Registrar:
    """Stands in for grpc.aio.Server in ``add_service``: keeps the method handlers."""

    def __init__(self) -> None:
        self.handlers: dict[str, Any] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        for name, handler in handlers.items():
            self.handlers[f"/{service}/{name}"] = handler


def write_repository(model: str, repository: Path, execution: str | None) -> str:
    """Write ``model``'s repository into ``repository``; returns the model's name."""
    if model == "digits":
        from servekit.demo import write_demo_repository

        write_demo_repository(repository, include_torch=False)
        return "digits"
    sys.path.insert(0, str(HERE / "peers"))
    sys.path.insert(0, str(HERE))
    from peers.base import Workload
    from peers.triton_repository import write_python_repository
    from peers.workloads import write_w1

    folder = repository.parent / "w1-workload"
    folder.mkdir()
    write_w1(folder)
    write_python_repository(Workload.load(folder), repository)
    if execution is not None:
        with (repository / "w1" / "config.pbtxt").open("a") as config:
            config.write(f'parameters {{ key: "servekit.execution" value: {{ string_value: "{execution}" }} }}\n')
    return "w1"


async def build(repository: Path, model: str) -> tuple[Any, dict[str, Any]]:
    """A started ServingCore over ``repository`` serving ``model`` and one coroutine factory per path."""
    import numpy as np

    from servekit.codecs.raw import array_to_bytes
    from servekit.config import ServerSettings
    from servekit.grpc.generated import inference_pb2, model_service_pb2
    from servekit.grpc.inference import InferenceServicer
    from servekit.grpc.model_service import ModelServicer
    from servekit.grpc.rpc import add_service
    from servekit.http.hot_routes import HotRoutes
    from servekit.serving.core import ServingCore
    from servekit.types import InferenceRequest, Tensor

    settings = ServerSettings(repository=repository, default_model=model, access_log="off", metrics_port=0,
                              management_port=0)
    core = ServingCore(settings)
    await core.start()
    registrar = _Registrar()
    for servicer in (InferenceServicer(core.plane), ModelServicer(core.simple)):
        add_service(registrar, servicer.service, servicer)  # type: ignore[arg-type]
    row = (np.arange(64) % 17).astype(np.float32)
    infer = inference_pb2.ModelInferRequest(model_name=model)
    infer.inputs.add(name="input", datatype="FP32", shape=[1, 64])
    infer.raw_input_contents.append(array_to_bytes(row.reshape(1, 64)))
    predict = model_service_pb2.PredictRequest(features=row.tolist(), model="digits")
    context = _Context()

    def grpc_call(path: str, body: bytes) -> Any:
        handler = registrar.handlers[path]

        async def call() -> bytes:
            return handler.response_serializer(await handler.unary_unary(body, context))  # type: ignore[no-any-return]

        return call

    async def _not_found(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError(f"not a hot route: {scope['path']}")

    hot = HotRoutes(_not_found, core.plane, core.simple, settings)

    def http_call(path: str, body: bytes) -> Any:
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        scope = {"type": "http", "method": "POST", "path": path, "root_path": "", "headers": headers,
                 "query_string": b""}
        message = {"type": "http.request", "body": body, "more_body": False}

        async def call() -> None:
            sent: list[Any] = []

            async def receive() -> dict[str, Any]:
                return message

            async def send(event: dict[str, Any]) -> None:
                sent.append(event)

            await hot(scope, receive, send)
            if sent[0]["status"] != 200:
                raise RuntimeError(f"{path}: {sent[0]['status']} {sent[1]['body'][:200]!r}")

        return call

    wire = _wire_call(core, settings, f"/v2/models/{model}/infer")

    async def plane_call() -> None:
        request = InferenceRequest(model, [Tensor("input", "FP32", (1, 64), row.reshape(1, 64))])
        await core.plane.infer(request)

    oip = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": row.tolist()}]})
    calls = {
        "grpc-infer": grpc_call("/inference.GRPCInferenceService/ModelInfer", infer.SerializeToString()),
        "grpc-predict": grpc_call("/modelserving.ModelService/Predict", predict.SerializeToString()),
        "http-infer": http_call(f"/v2/models/{model}/infer", oip.encode()),
        "http-predict": http_call("/predict", json.dumps({"inputs": [row.tolist()]}).encode()),
        "http-wire": wire(oip.encode()),
        "plane-infer": plane_call,
    }
    return core, calls


class _Wire:
    """A transport for one protocol: what it writes resolves the waiting call's future."""

    def __init__(self) -> None:
        self.waiter: asyncio.Future[bytes] | None = None

    def write(self, data: bytes) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is None:
            raise RuntimeError(f"a write nobody waited for: {data[:200]!r}")
        waiter.set_result(data)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        raise RuntimeError("the server closed a keep-alive connection")

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 40000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def _wire_call(core: Any, settings: Any, path: str) -> Any:
    """``http-wire``'s call factory: servekit's app behind its HTTP protocol, as ``servekit serve``
    configures uvicorn (servekit.server), fed the request's bytes."""
    import uvicorn
    from uvicorn.server import ServerState

    from servekit.http.app import create_app
    from servekit.http.protocol import CoalescingHttpToolsProtocol

    config = uvicorn.Config(create_app(settings, core), access_log=False, log_config=None, server_header=False,
                            proxy_headers=False, limit_concurrency=(settings.max_connections or 0) + 1)
    config.load()
    state = ServerState()
    idle: list[tuple[Any, _Wire]] = []

    def factory(body: bytes) -> Any:
        request = (f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                   f"content-length: {len(body)}\r\n\r\n").encode() + body

        async def call() -> None:
            if idle:
                protocol, wire = idle.pop()
            else:
                wire = _Wire()
                protocol = CoalescingHttpToolsProtocol(config=config, server_state=state, app_state={})
                protocol.connection_made(wire)  # type: ignore[arg-type]
            wire.waiter = asyncio.get_running_loop().create_future()
            protocol.data_received(request)
            answer = await wire.waiter
            if not answer.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"{path}: {answer[:300]!r}")
            idle.append((protocol, wire))

        return call

    return factory


def _instance_threads(model: str) -> list[threading.Thread]:
    """The batcher's instance threads of ``model`` (named ``model:version-index``)."""
    return [thread for thread in threading.enumerate() if thread.name.startswith(f"{model}:")]


def _thread_cpu(thread: threading.Thread) -> float:
    assert thread.ident is not None
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


def _batches(core: Any, model: str) -> tuple[int, int]:
    """Requests (rows) and batches the model has run so far."""
    stats = core.plane.model_statistics(model)["model_stats"][0]
    return int(stats["inference_count"]), int(stats["execution_count"])


async def run_calls(call: Any, calls: int, concurrency: int, core: Any, model: str) -> tuple[float, float, float]:
    """CPU seconds per call of the event loop's thread and of the model's instance threads,
    and the mean rows per batch, ``calls`` calls with ``concurrency`` in flight. CPU time rather
    than wall time: on a machine shared with other work, wall time measures the neighbours too
    (threads the model's library starts are not counted)."""
    remaining = calls

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await call()

    threads = _instance_threads(model)
    rows, batches = _batches(core, model)
    started = time.thread_time()
    threads_started = sum(_thread_cpu(thread) for thread in threads)
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    loop = time.thread_time() - started
    instance = sum(_thread_cpu(thread) for thread in threads) - threads_started
    rows_after, batches_after = _batches(core, model)
    return loop / calls, instance / calls, (rows_after - rows) / max(1, batches_after - batches)


def runtime_batch(repository: Path, model: str, calls: int, batch: int) -> tuple[float, float, float]:
    """CPU seconds per request of the model's runtime on ``calls // batch`` batches of ``batch`` one-row
    requests, called directly on this thread (a fresh instance: the server's own one is not disturbed)."""
    import numpy as np

    from servekit.runtimes import RuntimeContext, create_runtime
    from servekit.runtimes.base import RuntimeRequest
    from servekit.serving.entry import read_model_config

    model_dir = repository / model
    config = read_model_config(model_dir)
    runtime = create_runtime(config.runtime or "onnx", RuntimeContext(model, 1, model_dir, model_dir / "1", config))
    runtime.load()
    try:
        row = (np.arange(64) % 17).astype(np.float32).reshape(1, 64)
        requests = [RuntimeRequest({"input": row.copy()}, {}, (), None) for _ in range(batch)]
        merged = {"input": np.concatenate([row] * batch)}
        batches = max(1, calls // batch)
        started = time.thread_time()
        for _ in range(batches):
            if runtime.per_request:
                runtime.predict_requests(requests)
            else:
                runtime.predict(merged)
        return (time.thread_time() - started) / (batches * batch), 0.0, float(batch)
    finally:
        runtime.unload()


async def measure(model: str, paths: list[str], calls: int, concurrency: int, profile: str | None,
                  execution: str | None = None) -> dict[str, tuple[float, float, float]]:
    with tempfile.TemporaryDirectory() as scratch:
        repository = Path(scratch) / "repository"
        repository.mkdir()
        name = write_repository(model, repository, execution)
        core, factories = await build(repository, name)
        try:
            results = {}
            for path in paths:
                direct = path == "runtime-batch"
                if direct:
                    runtime_batch(repository, name, min(2000, calls), concurrency)  # warm-up
                else:
                    await run_calls(factories[path], min(2000, calls), concurrency, core, name)  # warm-up
                profiler = cProfile.Profile() if profile == path else None
                if profiler is not None:
                    profiler.enable()
                if direct:
                    results[path] = runtime_batch(repository, name, calls, concurrency)
                else:
                    results[path] = await run_calls(factories[path], calls, concurrency, core, name)
                if profiler is not None:
                    profiler.disable()
                    pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(35)
            return results
        finally:
            await core.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", choices=MODELS, default="digits", help="what is served (see above)")
    parser.add_argument("--execution", choices=("auto", "thread", "inline"),
                        help="triton-python only: config.pbtxt's servekit.execution parameter")
    parser.add_argument("--paths", help="comma-separated (default: every path the model serves)")
    parser.add_argument("--profile", choices=PATHS, help="cProfile this path (stderr; the loop thread only), "
                        "one round")
    parser.add_argument("--compare-src", type=Path, help="also run a copy of src/ (put first on PYTHONPATH)")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # one round, as JSON (children)
    args = parser.parse_args()
    if args.execution is not None and args.model != "triton-python":
        parser.error("--execution is for --model triton-python")
    paths = args.paths.split(",") if args.paths else list(DEFAULT_PATHS[args.model])
    if args.json or args.profile:
        result = asyncio.run(measure(args.model, paths, args.calls, args.concurrency, args.profile, args.execution))
        print(json.dumps(result) if args.json else "\n".join(f"{p}: {_cost(*costs)}" for p, costs in
                                                              result.items()))
        return 0
    sources = {"current": None, **({"before": args.compare_src.resolve()} if args.compare_src else {})}
    figures: dict[str, dict[str, list[float]]] = {name: {p: [] for p in paths} for name in sources}
    splits: dict[str, dict[str, list[float]]] = {name: {p: [] for p in paths} for name in sources}
    for round_number in range(args.rounds):
        for name, src in sources.items():
            env = dict(os.environ)
            if src is not None:
                env["PYTHONPATH"] = f"{src}:{env.get('PYTHONPATH', '')}"
            command = [sys.executable, __file__, "--json", "--calls", str(args.calls), "--concurrency",
                       str(args.concurrency), "--paths", ",".join(paths), "--model", args.model,
                       *(["--execution", args.execution] if args.execution else [])]
            completed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900, check=True)
            round_figures = json.loads(completed.stdout.strip().splitlines()[-1])
            for path, (loop, instance, _) in round_figures.items():
                figures[name][path].append((loop + instance) * 1e6)
                splits[name][path].append(instance * 1e6)
            print(f"round {round_number + 1} {name}: " + ", ".join(
                f"{p} {figures[name][p][-1]:.1f} (batches of {round_figures[p][2]:.1f})" for p in paths), flush=True)
    print(f"\nCPU us per call (loop + instance threads), median (min-max) of {args.rounds} rounds; {args.calls} "
          f"calls, {args.concurrency} in flight; model {args.model}")
    for path in paths:
        cells = [f"{name} {statistics.median(v[path]):.1f} ({min(v[path]):.1f}-{max(v[path]):.1f})"
                 + (f" [instance threads {statistics.median(splits[name][path]):.1f}]"
                    if max(splits[name][path]) > 0 else "")
                 for name, v in figures.items()]
        print(f"{path}: " + "; ".join(cells))
    return 0


def _cost(loop: float, instance: float, batch: float) -> str:
    split = f" (loop {loop * 1e6:.1f} + instance threads {instance * 1e6:.1f})" if instance else ""
    return f"{(loop + instance) * 1e6:.1f} us/call{split}, batches of {batch:.1f} requests"


if __name__ == "__main__":
    sys.exit(main())
