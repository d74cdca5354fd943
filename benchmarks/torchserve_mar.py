"""The same TorchServe archive on TorchServe 0.12 and on servekit, side by side in one run.

    python benchmarks/torchserve_mar.py --out benchmarks/results/torchserve_mar.md
    python benchmarks/torchserve_mar.py --duration 5 --repeat 1          # a quick look
    python benchmarks/torchserve_mar.py --profile benchmarks/results/tmp/ts-profile   # py-spy on servekit

One ``.mar`` is made with the real ``torch-model-archiver``: the TorchScript model and the
TorchServe-style handler the TorchServe tests use (``tests/formats/torchserve/handlers``:
``text_handler.py``, a ``BaseHandler`` subclass taking "1,2,3" rows and answering softmax scores)
and a ``model_config.yaml`` with batchSize 32, maxBatchDelay 10 ms, one worker. Both servers are
started as their users start them, on that one model store:

    torchserve --start --foreground --ncs --disable-token-auth --model-store STORE --models tiny=tiny.mar \
        --ts-config CFG
    servekit serve --model-store STORE --models tiny=tiny.mar --http-port P --grpc-port 0 --metrics-port 0 \
        --management-port 0

TorchServe 0.12 runs from its own venv (``--venvs``, as ``peers_compare.py`` builds it: torchserve,
torch-model-archiver, torch 2.13.0, pyyaml, numpy), its Java frontend from ``java`` 17+.
Each answer is checked once (the same softmax scores from both) before wrk drives
``POST /predictions/tiny`` (body ``1,2,3``, text/plain) at each ``--connections`` count while the
server's process group is sampled for CPU (CPU seconds over wall seconds: 200 % is both cores)
and peak resident memory. With ``--repeat N`` the servers alternate (servekit, TorchServe,
servekit, ...) and the report keeps the run with the median req/s of each. Every process runs in a
session of its own and is stopped by PID. Nothing here asserts a number.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import harness
from peers.base import Launch, ensure_venv, free_port
from peers.torchserve import TorchServePeer, _environment, java_major_version
from peers_compare import PeakRss, _log_tail, group_usage, run_wrk, start, stop
from tests.formats.torchserve.mar import HANDLERS, write_torchscript

ROOT = Path(__file__).resolve().parents[1]
BODY = "1,2,3"
EXPECTED = [0.006692850962281227, 0.9933071732521057]  # softmax([1 - 3, 0.5 * 6]) of TinyNet's weights
MODEL_CONFIG = "minWorkers: 1\nmaxWorkers: 1\nbatchSize: 32\nmaxBatchDelay: 10\nresponseTimeout: 120\n"
READY_TIMEOUT_S = 180.0


@dataclass
class Row:
    server: str
    connections: int
    req_s: float
    p50_ms: float
    p99_ms: float
    cpu_pct: float
    rss_mb: float
    errors: int
    output: str


def build_store(folder: Path) -> Path:
    """tiny.mar in ``folder/store``, made by the archiver of this interpreter's environment."""
    work, store = folder / "work", folder / "store"
    store.mkdir(parents=True)
    (work / "config").mkdir(parents=True)
    config = work / "config" / "model_config.yaml"
    config.write_text(MODEL_CONFIG)
    script = write_torchscript(work)
    archiver = Path(sys.executable).parent / "torch-model-archiver"
    subprocess.run([str(archiver), "--model-name", "tiny", "--version", "1.0", "--serialized-file", str(script),
                    "--handler", str(HANDLERS / "text_handler.py"), "--config-file", str(config),
                    "--export-path", str(store)], check=True, capture_output=True, timeout=120)
    return store


def servekit_launch(store: Path, port: int) -> Launch:
    command = [sys.executable, "-m", "servekit", "serve", "--model-store", str(store), "--models", "tiny=tiny.mar",
               "--host", "127.0.0.1", "--http-port", str(port), "--grpc-port", "0", "--metrics-port", "0",
               "--management-port", "0"]
    base = f"http://127.0.0.1:{port}"
    return Launch(command=command, url=f"{base}/predictions/tiny", body=BODY, ready_url=f"{base}/ping",
                  content_type="text/plain", note="one process, default settings (access log on)")


def torchserve_launch(python: Path, store: Path, workdir: Path, port: int) -> Launch:
    properties = {
        "inference_address": f"http://127.0.0.1:{port}",
        "management_address": f"http://127.0.0.1:{free_port()}",
        "metrics_address": f"http://127.0.0.1:{free_port()}",
        "grpc_inference_address": "127.0.0.1", "grpc_inference_port": str(free_port()),
        "grpc_management_address": "127.0.0.1", "grpc_management_port": str(free_port()),
        "default_workers_per_model": "1",
        "disable_token_authorization": "true",
        "install_py_dep_per_model": "false",
        "disable_system_metrics": "true",
    }
    config = workdir / "config.properties"
    config.write_text("".join(f"{key}={value}\n" for key, value in properties.items()))
    command = [str(python.parent / "torchserve"), "--start", "--foreground", "--ncs", "--disable-token-auth",
               "--model-store", str(store), "--models", "tiny=tiny.mar", "--ts-config", str(config)]
    base = f"http://127.0.0.1:{port}"
    return Launch(command=command, url=f"{base}/predictions/tiny", body=BODY, ready_url=f"{base}/ping",
                  content_type="text/plain", env=_environment(workdir), cwd=workdir,
                  note="Java frontend, one Python worker, default logging, system metrics off")


def wait_correct(launch: Launch, process: subprocess.Popen[bytes], log: Path) -> float:
    """Seconds from now until the first prediction is right (the model is loaded and answering)."""
    started = time.monotonic()
    while time.monotonic() - started < READY_TIMEOUT_S:
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode} before it answered:\n{_log_tail(log)}")
        try:
            status, body = harness.http("POST", launch.url, BODY, timeout=30.0, content_type="text/plain")
        except OSError:
            time.sleep(0.2)
            continue
        if status == 200:
            scores = json.loads(body)
            if not all(math.isclose(a, b, rel_tol=1e-5) for a, b in zip(scores, EXPECTED, strict=True)):
                raise RuntimeError(f"wrong answer {scores}, expected {EXPECTED}")
            return time.monotonic() - started
        time.sleep(0.2)
    raise RuntimeError(f"no correct answer within {READY_TIMEOUT_S} s:\n{_log_tail(log)}")


def measure(name: str, launch: Launch, workdir: Path, args: argparse.Namespace, wrk: str,
            py_spy: str | None) -> list[Row]:
    log = workdir / f"{name}.log"
    print(f"[{name}] {shlex.join(launch.command)}", flush=True)
    process = start(launch, log)
    rows = []
    try:
        cold = wait_correct(launch, process, log)
        print(f"[{name}] answering correctly after {cold:.2f} s", flush=True)
        script = workdir / "request.lua"
        script.write_text(harness.wrk_script(BODY, "text/plain"))
        run_wrk(wrk, launch.url, script, max(args.connections), args.threads, args.warmup)
        for connections in args.connections:
            profiler = None
            if py_spy and name == "servekit":
                args.profile.mkdir(parents=True, exist_ok=True)
                profiler = subprocess.Popen([py_spy, "record", "-p", str(process.pid), "-d", str(int(args.duration)),
                                             "-r", "100", "-f", "raw", "-o",
                                             str(args.profile / f"servekit-c{connections}.txt")],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            before, _ = group_usage(process.pid)
            sampler = PeakRss(process.pid)
            t0 = time.monotonic()
            load = run_wrk(wrk, launch.url, script, connections, args.threads, args.duration)
            wall = time.monotonic() - t0
            peak = sampler.stop()
            after, _ = group_usage(process.pid)
            if profiler is not None:
                profiler.wait(timeout=60)
            row = Row(name, connections, load.req_s, load.p50_ms, load.p99_ms, 100 * (after - before) / wall, peak,
                      load.errors, load.output)
            rows.append(row)
            print(f"[{name}] c={connections}: {row.req_s:.0f} req/s, p50 {row.p50_ms:.2f} ms, p99 {row.p99_ms:.2f}"
                  f" ms, CPU {row.cpu_pct:.0f}%, RSS {row.rss_mb:.0f} MiB, errors {row.errors}", flush=True)
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode} during the run:\n{_log_tail(log)}")
    finally:
        stop(process)
    return rows


def median_rows(runs: list[Row]) -> Row:
    """The run with the median req/s (the lower middle one for an even count)."""
    ordered = sorted(runs, key=lambda row: row.req_s)
    return ordered[(len(ordered) - 1) // 2]


def report(path: Path, chosen: list[Row], every: list[Row], args: argparse.Namespace, loads: tuple[str, str],
           versions: str, command: str) -> None:
    lines = [
        "# The same `.mar` on TorchServe 0.12 and on servekit",
        "",
        f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}; {harness.machine_description()}.",
        f"Load average before: {loads[0]}; after: {loads[1]}. Versions: {versions}.",
        "",
        f"Command: `{command}`",
        "",
        "One archive, `tiny.mar` (torch-model-archiver 0.12: a TorchScript 3 -> 2 linear model, the TorchServe-style",
        "handler `tests/formats/torchserve/handlers/text_handler.py`, model_config.yaml batchSize 32, maxBatchDelay",
        "10 ms, one worker), served by each server from the same model store as its users start it.",
        f"{harness.wrk_version(args.wrk)} POSTs `1,2,3` (text/plain) to `/predictions/tiny`, {args.threads} threads,"
        f" {args.duration:g} s per run after a {args.warmup:g} s warm-up, on the same 2 cores as the server.",
        f"Each row is the median-req/s run of {args.repeat}, servers alternating." if args.repeat > 1 else "",
        "CPU is the server's whole process group (Java frontend and Python worker for TorchServe). The machine is",
        "shared (see the load average): compare rows of one run only, and the ratios rather than the figures.",
        "",
        "| server | connections | req/s | p50 ms | p99 ms | CPU % | peak RSS MiB | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in chosen:
        lines.append(f"| {row.server} | {row.connections} | {row.req_s:,.0f} | {row.p50_ms:.2f} | {row.p99_ms:.2f} | "
                     f"{row.cpu_pct:.0f} | {row.rss_mb:.0f} | {row.errors} |")
    lines.append("")
    for connections in args.connections:
        by = {row.server: row for row in chosen if row.connections == connections}
        if "servekit" in by and "torchserve" in by:
            ours, theirs = by["servekit"], by["torchserve"]
            lines.append(f"- {connections} connections: servekit {ours.req_s / theirs.req_s:.2f}x TorchServe's "
                         f"req/s, p99 {ours.p99_ms:.2f} ms against {theirs.p99_ms:.2f} ms "
                         f"({ours.p99_ms / theirs.p99_ms:.2f}x).")
    if args.repeat > 1:
        lines += ["", "Every run:", "", "| server | connections | req/s | p50 ms | p99 ms | CPU % |",
                  "|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {r.server} | {r.connections} | {r.req_s:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | "
                  f"{r.cpu_pct:.0f} |" for r in every]
    lines += ["", "## Raw wrk output (the rows above)", ""]
    for row in chosen:
        lines += [f"### {row.server}, {row.connections} connections", "", "```", row.output.strip(), "```", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", default="32", type=lambda s: [int(c) for c in s.split(",")])
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1, help="runs per server, alternating; the median is kept")
    parser.add_argument("--venvs", type=Path, default=ROOT / "benchmarks" / "results" / "tmp" / "venvs")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "tmp" / "torchserve_mar.md")
    parser.add_argument("--profile", type=Path, metavar="DIR", help="record servekit with py-spy during each run")
    parser.add_argument("--install-tools", action="store_true")
    args = parser.parse_args()
    command = "python benchmarks/torchserve_mar.py " + shlex.join(sys.argv[1:])
    args.wrk = harness.ensure_wrk(args.install_tools)
    py_spy = harness.ensure_py_spy(args.install_tools) if args.profile else None
    peer = TorchServePeer()
    problem = peer.check_system()
    if problem:
        print(problem, file=sys.stderr)
        return 1
    import numpy

    python, spent = ensure_venv(args.venvs, peer, (f"numpy=={numpy.__version__}",))
    if spent:
        print(f"built TorchServe's venv in {spent:.0f} s", flush=True)
    theirs = subprocess.run([str(python), "-c", "from importlib.metadata import version; print(version('torchserve'))"],
                            capture_output=True, text=True).stdout.strip() or "?"
    versions = f"{harness.library_versions(('servekit', 'torch'))}, TorchServe {theirs}, Java {java_major_version()}"
    before = harness.load_average()
    every: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="ts-mar-") as scratch:
        folder = Path(scratch)
        store = build_store(folder)
        for run in range(args.repeat):
            for name in ("servekit", "torchserve"):
                workdir = folder / f"{name}-{run}"
                workdir.mkdir()
                port = free_port()
                launch = servekit_launch(store, port) if name == "servekit" else \
                    torchserve_launch(python, store, workdir, port)
                every += measure(name, launch, workdir, args, args.wrk, py_spy)
    chosen = [median_rows([r for r in every if r.server == name and r.connections == c])
              for c in args.connections for name in ("servekit", "torchserve")]
    report(args.out, chosen, every, args, (before, harness.load_average()), versions, command)
    return 1 if any(row.errors for row in every) else 0


if __name__ == "__main__":
    sys.exit(main())
