"""The no-op unary gRPC ceiling of every way to serve gRPC from Python, beside servekit, one run.

    python benchmarks/grpc_frontends.py --duration 5 --rounds 3 --out benchmarks/results/grpc_frontends.md

Each front end serves one unary method that does nothing (an empty request in, an empty
response out, status OK in the trailers) on 127.0.0.1, and h2load drives it exactly as
``peers_compare.py`` drives a gRPC peer: 32 HTTP/2 connections with one call at a time each,
and one connection with one call at a time. In the same run servekit answers
``inference.GRPCInferenceService/ModelInfer`` (the demo digits MLP, one row of 64 FP32, raw
contents) and ``modelserving.ModelService/Predict`` on the same shape, so its ratio to each
ceiling is measured side by side. ``--rounds`` repeats the whole list, alternating, and the
report gives each row's median with the min-max.

Front ends (the third-party ones are installed into ``--venvs``/grpc-frontends, pinned):

- ``grpcio-aio``: grpc.aio, a generic handler on raw bytes (no (de)serializer), registered as
  servekit registers its methods; on the default asyncio loop and on uvloop (servekit's loop).
- ``grpcio-sync``: grpcio's threaded server, a ThreadPoolExecutor of 8.
- ``grpclib``: pure-Python HTTP/2 (h2) on asyncio, a raw-bytes codec.
- ``hypercorn``: an ASGI app on Hypercorn's HTTP/2 (h2), sending grpc-status as an HTTP trailer
  (ASGI's ``http.response.trailers`` extension).
- ``servekit native``: servekit's own ``--grpc-frontend native`` (nghttp2 in a C extension, calls on
  servekit's event loop): ModelInfer and Predict as above, and ServerLive, which touches no model:
  the native front end's own per-call ceiling inside servekit.
- ``granian``: an ASGI app on Granian (Rust: hyper over PyO3) over HTTP/2. Granian cannot send
  trailers, so this is not a gRPC server: its row measures what a Rust HTTP/2 front end calling
  one Python coroutine per request costs, the question behind a native front end.

Every gRPC front end is checked once with a grpcio client before its load (the call must end
OK: trailers arrived); h2load counts HTTP statuses only. Servers are stopped by PID.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from harness import free_port, grpc_frame, load_average, machine_description, run_h2load  # noqa: E402
from peers.base import Peer, ensure_venv  # noqa: E402

NOOP_PATH = "/bench.Noop/Call"

GRPCIO_AIO = '''
import asyncio, sys
import grpc

async def call(request, context):
    return b""

async def main(port):
    server = grpc.aio.server()
    handlers = {"Call": grpc.unary_unary_rpc_method_handler(call)}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Noop", handlers),))
    server.add_registered_method_handlers("bench.Noop", handlers)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()

if sys.argv[2] == "uvloop":
    import uvloop
    uvloop.install()
asyncio.run(main(int(sys.argv[1])))
'''

GRPCIO_SYNC = '''
import sys
from concurrent.futures import ThreadPoolExecutor
import grpc

def call(request, context):
    return b""

server = grpc.server(ThreadPoolExecutor(max_workers=8))
handlers = {"Call": grpc.unary_unary_rpc_method_handler(call)}
server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Noop", handlers),))
server.add_insecure_port(f"127.0.0.1:{sys.argv[1]}")
server.start()
server.wait_for_termination()
'''

GRPCLIB = '''
import asyncio, sys
import uvloop
from grpclib.const import Cardinality, Handler
from grpclib.encoding.base import CodecBase
from grpclib.server import Server

class Raw(CodecBase):
    __content_subtype__ = "proto"
    def encode(self, message, message_type):
        return message
    def decode(self, data, message_type):
        return data

class Noop:
    async def call(self, stream):
        await stream.recv_message()
        await stream.send_message(b"")
    def __mapping__(self):
        return {"/bench.Noop/Call": Handler(self.call, Cardinality.UNARY_UNARY, bytes, bytes)}

async def main(port):
    server = Server([Noop()], codec=Raw())
    await server.start("127.0.0.1", port)
    await server.wait_closed()

uvloop.install()
asyncio.run(main(int(sys.argv[1])))
'''

# An ASGI app answering any POST as a gRPC unary call: one empty message, then grpc-status 0
# as a trailer when the server offers the trailers extension (else in the headers).
ASGI_APP = '''
EMPTY = b"\\x00\\x00\\x00\\x00\\x00"

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    headers = [(b"content-type", b"application/grpc")]
    if "http.response.trailers" in scope.get("extensions", {}):
        await send({"type": "http.response.start", "status": 200, "headers": headers, "trailers": True})
        await send({"type": "http.response.body", "body": EMPTY, "more_body": False})
        await send({"type": "http.response.trailers", "headers": [(b"grpc-status", b"0")], "more_trailers": False})
    else:
        await send({"type": "http.response.start", "status": 200, "headers": headers + [(b"grpc-status", b"0")]})
        await send({"type": "http.response.body", "body": EMPTY})
'''


class FrontendsVenv(Peer):
    """The venv the third-party front ends run in (only its requirements are used)."""

    name = "grpc-frontends"
    requirements = ("grpclib==0.4.9", "hypercorn==0.18.0", "granian==2.8.9", "uvloop==0.23.0", "grpcio==1.85.3")


@dataclass
class Target:
    name: str
    command: list[str]  # {port} is replaced
    path: str
    body: bytes
    grpc: bool = True  # a real gRPC server: checked with a grpcio client first
    note: str = ""


@dataclass
class Row:
    target: str
    connections: int
    round: int
    req_s: float
    mean_ms: float
    p99_ms: float
    errors: int


def servekit_bodies() -> tuple[bytes, bytes]:
    from servekit.codecs.raw import array_to_bytes
    from servekit.grpc.generated import inference_pb2, model_service_pb2

    row = (np.arange(64) % 17).astype(np.float32)
    infer = inference_pb2.ModelInferRequest(model_name="digits")
    infer.inputs.add(name="input", datatype="FP32", shape=[1, 64])
    infer.raw_input_contents.append(array_to_bytes(row.reshape(1, 64)))
    predict = model_service_pb2.PredictRequest(features=row.tolist(), model="digits")
    return grpc_frame(infer.SerializeToString()), grpc_frame(predict.SerializeToString())


def targets(scratch: Path, own: str, other: str, repository: Path) -> list[Target]:
    scripts = {"grpcio_aio.py": GRPCIO_AIO, "grpcio_sync.py": GRPCIO_SYNC, "grpclib_noop.py": GRPCLIB,
               "asgi_noop.py": ASGI_APP,
               # Hypercorn closes a connection after 1000 requests by default; h2load does not reconnect.
               "hypercorn.toml": "keep_alive_max_requests = 1000000000\n"}
    for name, text in scripts.items():
        (scratch / name).write_text(text)
    empty = grpc_frame(b"")
    infer, predict = servekit_bodies()
    serve = [own, "-m", "servekit", "serve", str(repository), "--host", "127.0.0.1", "--http-port", "{http}",
             "--grpc-port", "{port}", "--metrics-port", "0", "--management-port", "0", "--log-level", "warning"]
    native, serve = [*serve, "--grpc-frontend", "native"], [*serve, "--grpc-frontend", "grpcio"]
    return [
        Target("grpcio aio (uvloop)", [own, str(scratch / "grpcio_aio.py"), "{port}", "uvloop"], NOOP_PATH, empty),
        Target("servekit grpcio ModelInfer (digits MLP)", serve, "/inference.GRPCInferenceService/ModelInfer", infer),
        Target("servekit grpcio ModelService/Predict (digits MLP)", serve, "/modelserving.ModelService/Predict",
               predict),
        Target("servekit native ModelInfer (digits MLP)", native, "/inference.GRPCInferenceService/ModelInfer", infer),
        Target("servekit native ModelService/Predict (digits MLP)", native, "/modelserving.ModelService/Predict",
               predict),
        Target("servekit native ServerLive (no model: the front end's own ceiling)", native,
               "/inference.GRPCInferenceService/ServerLive", empty),
        Target("grpcio aio (asyncio loop)", [own, str(scratch / "grpcio_aio.py"), "{port}", "asyncio"], NOOP_PATH,
               empty),
        Target("grpcio sync, 8 threads", [own, str(scratch / "grpcio_sync.py"), "{port}"], NOOP_PATH, empty),
        Target("grpclib (h2, uvloop)", [other, str(scratch / "grpclib_noop.py"), "{port}"], NOOP_PATH, empty),
        Target("hypercorn ASGI (h2, uvloop, trailers)",
               [other, "-m", "hypercorn", "--config", str(scratch / "hypercorn.toml"), "--bind", "127.0.0.1:{port}",
                "--worker-class", "uvloop",
                "--log-level", "warning", "asgi_noop:app"],
               NOOP_PATH, empty),
        Target("granian ASGI (hyper, HTTP/2, no trailers)",
               [other, "-m", "granian", "--interface", "asgi", "--http", "2", "--host", "127.0.0.1", "--port",
                "{port}", "--workers", "1", "--runtime-threads", "1", "--loop", "uvloop", "--log-level", "warning",
                "asgi_noop:app"],
               NOOP_PATH, empty, grpc=False,
               note="not a gRPC server (no trailers): the cost of a Rust HTTP/2 front end calling Python"),
    ]


def _wait_port(port: int, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"not listening on {port} after {timeout:.0f} s")


def _check_grpc(port: int, target: Target) -> None:
    """One call through grpcio, which fails unless the status arrives (in the trailers)."""
    import grpc

    deadline = time.monotonic() + 60
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(target.path)
        while True:
            try:
                call(target.body[5:], timeout=10)
                return
            except grpc.RpcError as error:
                # servekit: the port opens before the model has loaded (UNAVAILABLE until then)
                if error.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


def h2load(port: int, target: Target, connections: int, duration: float, scratch: Path) -> tuple[Row, str]:
    run = run_h2load(port, target.path, target.body, connections, duration, scratch)
    latencies = np.array(run.latencies_ms)
    return Row(target.name, connections, 0, len(latencies) / duration, float(latencies.mean()),
               float(np.percentile(latencies, 99)), run.errors), run.output


def measure(target: Target, args: argparse.Namespace, scratch: Path, round_number: int,
            raw: list[str]) -> list[Row]:
    port, http = free_port(), free_port()
    command = [part.replace("{port}", str(port)).replace("{http}", str(http)) for part in target.command]
    env = dict(os.environ, PYTHONPATH=str(scratch))
    log = scratch / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=scratch,
                                   start_new_session=True)
    rows = []
    try:
        _wait_port(port, process)
        if target.grpc:
            _check_grpc(port, target)
        h2load(port, target, max(args.connections), args.warmup, scratch)
        for connections in args.connections:
            row, output = h2load(port, target, connections, args.duration, scratch)
            row.round = round_number
            rows.append(row)
            raw.append(f"### {target.name} / {connections} connections / round {round_number}\n\n```\n"
                       f"$ {shlex.join(command)}\n{output.strip()}\n```\n")
            print(f"[{target.name}] round {round_number} c={connections}: {row.req_s:.0f} req/s,"
                  f" mean {row.mean_ms:.2f} ms, p99 {row.p99_ms:.2f} ms, errors {row.errors}", flush=True)
        if target.grpc:
            _check_grpc(port, target)
    except Exception as error:
        tail = log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{target.name}: {error}\n{tail}") from error
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(process.pid, sig)
                process.wait(timeout=10)
                break
            except (ProcessLookupError, subprocess.TimeoutExpired):
                continue
    return rows


def write_report(path: Path, rows: list[Row], targets_: list[Target], args: argparse.Namespace,
                 load_before: str, raw: list[str], versions: str) -> None:
    lines = [
        "# gRPC front ends for Python: the no-op unary ceiling, beside servekit", "",
        f"Command: `{shlex.join(['python', *sys.argv])}`", "",
        f"Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Machine: {machine_description()}. Load average before:"
        f" {load_before}, after: {load_average()}.",
        f"Load: h2load, 1 thread, one call at a time per connection, {args.duration:.0f} s per run after"
        f" {args.warmup:.0f} s of warm-up, {args.rounds} rounds alternating over the list. Versions: {versions}.",
        "", "| server | conns | req/s: median round (min-max) | mean ms | p99 ms | errors | % of grpcio aio (uvloop) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    medians: dict[tuple[str, int], Row] = {}
    for target in targets_:
        for connections in args.connections:
            same = sorted((r for r in rows if r.target == target.name and r.connections == connections),
                          key=lambda r: r.req_s)
            if same:
                medians[(target.name, connections)] = same[(len(same) - 1) // 2]
    for target in targets_:
        for connections in args.connections:
            same = [r.req_s for r in rows if r.target == target.name and r.connections == connections]
            if not same:
                lines.append(f"| {target.name} | {connections} | failed | | | | |")
                continue
            row = medians[(target.name, connections)]
            ceiling = medians.get(("grpcio aio (uvloop)", connections))
            ratio = f"{100 * row.req_s / ceiling.req_s:.0f} %" if ceiling else "-"
            lines.append(f"| {target.name} | {connections} | {row.req_s:.0f} ({min(same):.0f}-"
                         f"{max(same):.0f}) | {row.mean_ms:.2f} | {row.p99_ms:.2f} | {row.errors} | {ratio} |")
    lines += ["", "Each server's req/s as a share of grpcio aio (uvloop) in the same round (the machine's load moves"
              " between rounds; within one, servekit's rows run right after the ceiling's):", "",
              "| server | conns | " + " | ".join(f"round {n}" for n in range(1, args.rounds + 1)) + " |",
              "|---|---:|" + "---:|" * args.rounds]
    for target in targets_:
        for connections in args.connections:
            cells = []
            for number in range(1, args.rounds + 1):
                own = [r for r in rows if (r.target, r.connections, r.round) == (target.name, connections, number)]
                base = [r for r in rows if (r.target, r.connections, r.round) == ("grpcio aio (uvloop)", connections,
                                                                                  number)]
                cells.append(f"{100 * own[0].req_s / base[0].req_s:.0f} %" if own and base else "-")
            lines.append(f"| {target.name} | {connections} | " + " | ".join(cells) + " |")
    notes = [f"- **{t.name}**: {t.note}" for t in targets_ if t.note]
    lines += ["", *notes, "", "## Raw h2load output", "", *raw]
    path.write_text("\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", default="32,1")
    parser.add_argument("--only", default="", help="comma-separated substrings of server names to run")
    parser.add_argument("--venvs", type=Path, default=Path("benchmarks/results/tmp/venvs"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/tmp/grpc_frontends.md"))
    args = parser.parse_args()
    args.connections = [int(c) for c in args.connections.split(",")]
    args.venvs.mkdir(parents=True, exist_ok=True)
    other, _ = ensure_venv(args.venvs.resolve(), FrontendsVenv())
    load_before = load_average()
    rows: list[Row] = []
    raw: list[str] = []
    with tempfile.TemporaryDirectory(prefix="grpc-frontends-") as tmp:
        scratch = Path(tmp)
        repository = scratch / "models"
        from servekit.demo import write_demo_repository

        write_demo_repository(repository, include_torch=False)
        chosen = [t for t in targets(scratch, sys.executable, str(other), repository)
                  if not args.only or any(part in t.name for part in args.only.split(","))]
        failed = False
        for round_number in range(1, args.rounds + 1):
            for target in chosen:
                try:
                    rows += measure(target, args, scratch, round_number, raw)
                except Exception as error:  # a failed server is a row, and the run goes on
                    failed = True
                    print(error, file=sys.stderr, flush=True)
        versions = subprocess.run(
            [str(other), "-c", "from importlib.metadata import version as v; print(', '.join(f'{n} {v(n)}' for n in"
             " ('grpcio', 'grpclib', 'h2', 'hypercorn', 'granian', 'uvloop')))"],
            capture_output=True, text=True, timeout=60).stdout.strip()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_report(args.out, rows, chosen, args, load_before, raw, versions)
    print(f"wrote {args.out}")
    return 1 if failed or any(row.errors for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
