"""REST against gRPC on one servekit server and one model, driven by h2load (nghttp2-client).

One ``servekit serve`` process (one worker) serves the demo's ``digits`` ONNX MLP
(64 -> 256 -> 10, dynamic batching on: max 32 rows, 2 ms) on HTTP and gRPC at once. h2load
replays one fixed request per API in a closed loop, one row of 64 FP32 values each:

- REST ``POST /v2/models/digits/infer``, JSON body and Triton's binary tensor extension
- REST ``POST /predict`` (the simple JSON API)
- gRPC ``inference.GRPCInferenceService/ModelInfer`` with ``raw_input_contents``
- gRPC ``modelserving.ModelService/Predict``

at 1 and 32 concurrent clients: for REST 32 HTTP/1.1 connections; for gRPC 32 HTTP/2
connections with one call at a time each, and also one connection carrying 32 concurrent
streams, gRPC's own way to be concurrent. The gRPC request is the serialized protobuf
message with gRPC's 5-byte length prefix, sent with ``content-type: application/grpc``.
h2load counts HTTP status only, and gRPC reports errors in trailers under status 200, so
every run is checked against the server's own statistics: the model's success count must
grow by h2load's request count and its failure count must not grow.

Run (h2load is Debian's nghttp2-client; the demo model needs servekit's [demo] extra):

    apt-get install -y nghttp2-client
    python benchmarks/grpc_vs_rest.py --duration 10 --out benchmarks/results/grpc_vs_rest.md

Servers listen on 127.0.0.1 only, on free ports, and are stopped by PID (SIGTERM, then
SIGKILL) whatever happens; every h2load run has a hard timeout.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from servekit.codecs.raw import array_to_bytes
from servekit.grpc.generated import inference_pb2, model_service_pb2

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from harness import free_port, grpc_frame, library_versions, load_average, machine_description  # noqa: E402

MODEL = "digits"
ROW = (np.arange(64) % 17).astype(np.float32)  # pixel values 0..16, as the digits data has


@dataclass(frozen=True)
class Api:
    name: str
    protocol: str  # "rest" (HTTP/1.1) or "grpc" (HTTP/2)
    path: str
    body: bytes
    headers: tuple[str, ...]


def apis() -> list[Api]:
    row = ROW.tolist()
    oip_json = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": row}]})
    header = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64],
                                     "parameters": {"binary_data_size": 256}}]}).encode()
    infer = inference_pb2.ModelInferRequest(model_name=MODEL)
    infer.inputs.add(name="input", datatype="FP32", shape=[1, 64])
    infer.raw_input_contents.append(array_to_bytes(ROW.reshape(1, 64)))
    predict = model_service_pb2.PredictRequest(features=row, model=MODEL)
    grpc_headers = ("content-type: application/grpc", "te: trailers")
    return [
        Api("REST /v2 infer (JSON)", "rest", f"/v2/models/{MODEL}/infer", oip_json.encode(),
            ("content-type: application/json",)),
        Api("REST /v2 infer (binary)", "rest", f"/v2/models/{MODEL}/infer", header + array_to_bytes(ROW),
            ("content-type: application/octet-stream", f"inference-header-content-length: {len(header)}")),
        Api("REST /predict", "rest", "/predict", json.dumps({"inputs": [row]}).encode(),
            ("content-type: application/json",)),
        Api("gRPC ModelInfer (raw)", "grpc", "/inference.GRPCInferenceService/ModelInfer",
            grpc_frame(infer.SerializeToString()), grpc_headers),
        Api("gRPC ModelService/Predict", "grpc", "/modelserving.ModelService/Predict",
            grpc_frame(predict.SerializeToString()), grpc_headers),
    ]


# -- the server --------------------------------------------------------------------------------------------


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    http_port: int
    grpc_port: int

    def stats(self) -> dict[str, int]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/v2/models/{MODEL}/stats", timeout=5) as r:
            entry = json.loads(r.read())["model_stats"][0]
        inference = entry["inference_stats"]
        return {"success": inference["success"]["count"], "fail": inference["fail"]["count"],
                "rows": entry["inference_count"], "batches": entry["execution_count"]}


@contextmanager
def serving(repository: Path, log_path: Path, source: Path | None = None) -> Iterator[Server]:
    """``source``: a ``src`` folder whose servekit to run instead of the installed one."""
    http_port, grpc_port = free_port(), free_port()
    command = [sys.executable, "-m", "servekit", "serve", str(repository), "--host", "127.0.0.1",
               "--http-port", str(http_port), "--grpc-port", str(grpc_port),
               "--metrics-port", "0", "--management-port", "0", "--log-level", "warning",
               "--default-model", MODEL]
    env = dict(os.environ)
    if source is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(source.resolve()), *filter(None, [env.get("PYTHONPATH")])])
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    server = Server(process, http_port, grpc_port)
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start:\n{log_path.read_text(errors='replace')[-3000:]}")
            with suppress(OSError):
                server.stats()
                break
            time.sleep(0.2)
        yield server
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(15)


# -- h2load ------------------------------------------------------------------------------------------------


@dataclass
class Result:
    api: str
    clients: str
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    mean_batch: float
    problems: list[str]

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def run_h2load(h2load: str, server: Server, api: Api, connections: int, streams: int, duration: int,
               scratch: Path) -> tuple[Result, str]:
    body, log = scratch / "body.bin", scratch / "requests.log"
    body.write_bytes(api.body)
    log.unlink(missing_ok=True)
    port = server.grpc_port if api.protocol == "grpc" else server.http_port
    command = [h2load, "-t", "1", "-c", str(connections), "-m", str(streams), "-D", str(duration),
               "--warm-up-time", "2", "-d", str(body), f"--log-file={log}"]
    command += ["--h1"] if api.protocol == "rest" else []
    for header in api.headers:
        command += ["-H", header]
    command.append(f"http://127.0.0.1:{port}{api.path}")
    before = server.stats()
    completed = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60)
    after = server.stats()
    output = completed.stdout + completed.stderr
    problems = [] if completed.returncode == 0 else [f"h2load exited {completed.returncode}"]
    rows = [line.split("\t") for line in log.read_text().splitlines() if line.strip()] if log.exists() else []
    latencies = sorted(int(row[2]) / 1000 for row in rows)
    statuses = [row[1] for row in rows]
    if not rows:
        problems.append("h2load logged no requests")
    failed = sum(status != "200" for status in statuses)
    if failed:
        problems.append(f"{failed} responses with an HTTP status other than 200")
    grew = {key: after[key] - before[key] for key in after}
    # h2load resets the streams still in flight when time is up; gRPC cancels those calls and the
    # server counts them as failed. More failures than calls in flight are real errors.
    if grew["fail"] > connections * streams:
        problems.append(f"the server counted {grew['fail']} failed requests")
    if grew["success"] < len(latencies):  # warm-up requests are counted by the server, not in the log
        problems.append(f"the server counted {grew['success']} successes for {len(latencies)} logged requests")
    clients = f"{connections}" if streams == 1 else f"{connections} conn x {streams} streams"
    result = Result(
        api=api.name, clients=clients, requests=len(latencies), seconds=duration,
        p50_ms=statistics.median(latencies) if latencies else 0.0,
        p99_ms=latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else 0.0,
        mean_batch=grew["rows"] / grew["batches"] if grew["batches"] else 0.0,
        problems=problems,
    )
    return result, f"$ {shlex.join(command)}\n{output.strip()}"


# -- the report --------------------------------------------------------------------------------------------


def report(results: list[Result], raw: list[str], header: list[str]) -> str:
    lines = [*header, "", "| API | clients | req/s | p50 ms | p99 ms | mean batch | problems |",
             "|---|---|---:|---:|---:|---:|---|"]
    for r in results:
        lines.append(f"| {r.api} | {r.clients} | {r.rate:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | "
                     f"{r.mean_batch:.1f} | {'; '.join(r.problems) or 'none'} |")
    lines += ["", "<details><summary>h2load output</summary>", "", "```", *raw, "```", "", "</details>", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="measured seconds per run (after 2 s warm-up)")
    parser.add_argument("--clients", default="1,32", help="concurrent clients, comma separated")
    parser.add_argument("--out", type=Path, help="write the markdown report here (default: print it)")
    parser.add_argument("--protocols", default="rest,grpc", help="which APIs to run: rest, grpc or rest,grpc")
    parser.add_argument("--compare-src", type=Path, metavar="DIR", help="also serve with the servekit in DIR (a src "
                        "folder, e.g. a copy of the code before a change), back to back; rows marked 'before'")
    args = parser.parse_args()
    if args.compare_src is not None and not (args.compare_src / "servekit" / "__init__.py").is_file():
        parser.error("--compare-src must be a folder holding a servekit package (e.g. a copy of src/)")
    protocols = {p.strip() for p in args.protocols.split(",") if p.strip()}
    h2load = shutil.which("h2load")
    if h2load is None:
        sys.exit("h2load is not on PATH: apt-get install -y nghttp2-client")
    counts = [int(c) for c in args.clients.split(",")]
    results: list[Result] = []
    raw: list[str] = []
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="servekit-bench-") as folder:
        scratch = Path(folder)
        subprocess.run([sys.executable, "-m", "servekit", "demo", str(scratch / "models"), "--no-torch"],
                       check=True, capture_output=True, timeout=300)
        variants: list[tuple[str, Path | None]] = [("current", None)]
        if args.compare_src is not None:
            variants.append(("before", args.compare_src))
        for variant, source in variants:
            with serving(scratch / "models", scratch / f"server_{variant}.log", source) as server:
                for api in apis():
                    if api.protocol not in protocols:
                        continue
                    for count in counts:
                        shapes = [(count, 1)] + ([(1, count)] if api.protocol == "grpc" and count > 1 else [])
                        for connections, streams in shapes:
                            result, output = run_h2load(h2load, server, api, connections, streams, args.duration,
                                                        scratch)
                            if args.compare_src is not None:
                                result.api = f"{result.api} [{variant}]"
                            print(f"{result.api:38} {result.clients:>22}: {result.rate:8,.0f} req/s  "
                                  f"p50 {result.p50_ms:6.2f} ms  p99 {result.p99_ms:6.2f} ms  "
                                  f"batch {result.mean_batch:4.1f}  {'; '.join(result.problems)}", flush=True)
                            results.append(result)
                            raw.append(output)
    command = shlex.join(["python", "benchmarks/grpc_vs_rest.py", *sys.argv[1:]])
    h2load_version = subprocess.run([h2load, "--version"], capture_output=True, text=True).stdout.strip()
    header = [
        "# REST against gRPC, one servekit process, the demo digits MLP", "",
        f"- command: `{command}`",
        f"- date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"- machine: {machine_description()}",
        f"- load average before / after: {load_before} / {load_average()}",
        f"- load generator: {h2load_version}, 1 thread, closed loop, {args.duration:g} s measured after 2 s warm-up",
        f"- {library_versions(('servekit', 'grpcio', 'protobuf', 'uvicorn', 'onnxruntime'))}",
    ]
    text = report(results, raw, header)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"wrote {args.out}")
    else:
        print(text)
    return 1 if any(r.problems for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
