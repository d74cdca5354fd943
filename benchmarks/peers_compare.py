"""servekit beside Triton, TorchServe, MLServer, LitServe, BentoML and Ray Serve, in one run.

    python benchmarks/peers/workloads.py                 # once: W1/W2/W3 models and requests
    python benchmarks/peers_compare.py --out benchmarks/results/peers.md

Each peer is installed from PyPI into its own virtual environment (``--venvs``, reused
when its requirements have not changed), serves the same model files through the same
model code (``peers/model_fn.py``) on 127.0.0.1, and is driven by the same load generator
(wrk: closed loop, one row per request). Per (peer, workload) the suite records the cold
start (process start to the first correct answer), checks the answer against the
workload's expected output, then runs wrk at each connection count while it samples the
server's CPU and resident memory (its whole process group). Every process is started in
a session of its own and stopped by PID (SIGTERM to the group, SIGKILL after 15 s).

Nothing here asserts a number; the report is a table, the plots, and the raw wrk output.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

import harness
from harness import free_port
from peers.base import Launch, Peer, Workload, ensure_venv

# name -> "module:Class" under benchmarks/peers/, imported only when asked for.
PEERS = {
    "servekit": "servekit_peer:ServekitPeer",
    "servekit-2w": "servekit_peer:ServekitTwoWorkersPeer",
    "servekit-grpcio": "servekit_peer:ServekitGrpcioPeer",
    "servekit-triton-repo": "servekit_peer:ServekitTritonRepoPeer",
    "servekit-triton-repo-idle": "servekit_peer:ServekitTritonRepoIdlePeer",
    "servekit-triton-repo-inline": "servekit_peer:ServekitTritonRepoInlinePeer",
    "triton-server": "triton_server:TritonServerPeer",
    "triton": "triton:TritonPeer",
    "torchserve": "torchserve:TorchServePeer",
    "mlserver": "mlserver:MLServerPeer",
    "litserve": "litserve:LitServePeer",
    "bentoml": "bentoml_peer:BentoMLPeer",
    "rayserve": "rayserve:RayServePeer",
}
# What every peer venv gets beside the peer itself: the model code's libraries, pinned to
# the versions servekit's own environment runs, so the computation is the same everywhere.
MODEL_LIBRARIES = ("onnxruntime", "scikit-learn", "joblib", "numpy")

READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 15.0


@dataclass
class Row:
    peer: str
    workload: str
    connections: int
    protocol: str = "http"  # "http": wrk, HTTP/1.1 + JSON; "grpc": h2load, OIP ModelInfer with raw tensors
    req_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    mean_ms: float = 0.0
    errors: int = 0
    cpu_pct: float = 0.0  # the server's process group: CPU seconds / wall seconds * 100
    rss_mb: float = 0.0  # the group's peak resident memory during the run
    cold_start_s: float = 0.0
    note: str = ""
    failed: str = ""
    round: int = 1  # which pass over the peer list (--rounds)


@dataclass
class Load:
    """One load-generator run, whichever tool made it."""

    req_s: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    errors: int
    output: str  # the tool's own report, for the raw section


# -- processes ---------------------------------------------------------------------------


def _session_pids(sid: int) -> list[int]:
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = Path(f"/proc/{entry.name}/stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[3]) == sid:  # field 6 of stat: the session id
                pids.append(int(entry.name))
    return pids


def group_usage(sid: int) -> tuple[float, float]:
    """(CPU seconds, resident MiB) summed over every process of the session ``sid``."""
    ticks = os.sysconf("SC_CLK_TCK")
    page = os.sysconf("SC_PAGE_SIZE")
    cpu = rss = 0.0
    for pid in _session_pids(sid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            cpu += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
            rss += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page / 2**20
    return cpu, rss


class PeakRss:
    """Samples the group's resident memory every 0.25 s in a thread; ``peak`` after ``stop``."""

    def __init__(self, sid: int) -> None:
        self.sid, self.peak = sid, 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(0.25):
            self.peak = max(self.peak, group_usage(self.sid)[1])

    def stop(self) -> float:
        self._done.set()
        self._thread.join()
        return self.peak


def start(launch: Launch, log_path: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, **launch.env)
    env.pop("VIRTUAL_ENV", None)
    with log_path.open("wb") as log:
        return subprocess.Popen(launch.command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                cwd=launch.cwd, start_new_session=True)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process group, SIGKILL to whatever is left after STOP_TIMEOUT_S."""
    sid = process.pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(sid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline and _session_pids(sid):
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=0.2)
    for pid in _session_pids(sid):  # children that left the process group keep the session
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(sid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=STOP_TIMEOUT_S)


def _log_tail(path: Path, lines: int = 40) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"


def wait_ready(process: subprocess.Popen[bytes], launch: Launch, workload: Workload, log: Path,
               started: float) -> float:
    """Seconds from ``started`` to the first correct answer; raises when it never comes."""
    deadline = started + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode} before ready:\n{_log_tail(log)}")
        with contextlib.suppress(OSError):
            if harness.http("GET", launch.ready_url, timeout=1.0)[0] == 200:
                status, body = harness.http("POST", launch.url, launch.body, timeout=30,
                                            content_type=launch.content_type)
                if status == 200:
                    elapsed = time.monotonic() - started
                    check_answer(launch, workload, body)
                    return elapsed
        time.sleep(0.05)
    raise RuntimeError(f"not ready after {READY_TIMEOUT_S:.0f} s:\n{_log_tail(log)}")


def check_answer(launch: Launch, workload: Workload, body: bytes) -> None:
    if launch.parse is None:
        raise RuntimeError("the peer gave no parse() for its responses")
    check_outputs(launch.parse(body), workload, repr(body[:300]))


def check_outputs(got: dict[str, np.ndarray], workload: Workload, shown: str) -> None:
    """Every expected output is in ``got`` and close to the workload's answer."""
    for name, expected in workload.expected().items():
        if name not in got:
            raise RuntimeError(f"answer lacks output {name!r}: {shown}")
        actual = np.asarray(got[name]).reshape(expected.shape)
        if not np.allclose(actual, expected, atol=workload.atol, rtol=1e-4):
            raise RuntimeError(f"wrong answer for {name!r}: {actual.ravel()[:8]} vs {expected.ravel()[:8]}")


# -- gRPC ---------------------------------------------------------------------------------


def grpc_request(workload: Workload) -> bytes:
    """The sample as one OIP ``ModelInferRequest`` with raw tensor contents, gRPC-framed."""
    from servekit.grpc.generated import inference_pb2

    request = inference_pb2.ModelInferRequest(model_name=workload.name)
    for spec, array in zip(workload.inputs, workload.sample().values(), strict=True):
        request.inputs.add(name=spec.name, datatype=spec.datatype, shape=list(array.shape))
        request.raw_input_contents.append(np.ascontiguousarray(array, dtype=spec.numpy_dtype).tobytes())
    return harness.grpc_frame(request.SerializeToString())


def grpc_check(port: int, workload: Workload) -> None:
    """One ModelInfer through grpcio; its outputs must match the workload's expected answer."""
    import grpc

    from servekit.grpc.generated import inference_pb2, inference_pb2_grpc

    request = inference_pb2.ModelInferRequest()
    request.ParseFromString(grpc_request(workload)[5:])
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = inference_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
    got = {}
    for output, raw in zip(reply.outputs, reply.raw_output_contents, strict=True):
        dtype = {"FP32": np.float32, "INT64": np.int64, "INT32": np.int32, "FP64": np.float64}[output.datatype]
        got[output.name] = np.frombuffer(raw, dtype=dtype).reshape(list(output.shape))
    check_outputs(got, workload, str(reply)[:300])


def run_h2load(port: int, workload: Workload, connections: int, duration: float, scratch: Path) -> Load:
    """h2load, ``connections`` HTTP/2 connections with one call at a time each (as wrk's closed loop)."""
    run = harness.run_h2load(port, "/inference.GRPCInferenceService/ModelInfer", grpc_request(workload),
                             connections, duration, scratch, threads=min(2, connections))
    latencies = np.array(run.latencies_ms)
    return Load(req_s=len(latencies) / duration, p50_ms=float(np.percentile(latencies, 50)),
                p99_ms=float(np.percentile(latencies, 99)), mean_ms=float(latencies.mean()),
                errors=run.errors, output=run.output)


def run_wrk(wrk: str, url: str, script: Path, connections: int, threads: int, duration: float) -> Load:
    result, output = harness.run_wrk(wrk, url, script, connections, threads, duration)
    return Load(req_s=result["requests"] / (result["duration_us"] / 1e6), p50_ms=result["p50_us"] / 1000,
                p99_ms=result["p99_us"] / 1000, mean_ms=result["mean_us"] / 1000,
                errors=int(sum(result[key] for key in result if key.endswith("_errors"))), output=output)


# -- one peer, one workload --------------------------------------------------------------


def measure(peer: Peer, python: Path, workload: Workload, args: argparse.Namespace, wrk: str,
            raw: list[str]) -> list[Row]:
    workdir = args.scratch / peer.name / workload.name
    if workdir.exists():
        subprocess.run(["rm", "-rf", str(workdir)], check=True)
    workdir.mkdir(parents=True)
    port = free_port()
    launch = peer.launch(python, workload, workdir, port)
    log = workdir / "server.log"
    print(f"[{peer.name}/{workload.name}] {shlex.join(launch.command)}", flush=True)
    started = time.monotonic()
    process = start(launch, log)
    rows = []
    try:
        cold = wait_ready(process, launch, workload, log, started)
        print(f"[{peer.name}/{workload.name}] ready and correct after {cold:.2f} s", flush=True)
        script = workdir / "request.lua"
        script.write_text(harness.wrk_script(launch.body, launch.content_type))
        loads: list[tuple[str, Callable[[int, float], Load]]] = [
            ("http", lambda c, d: run_wrk(wrk, launch.url, script, c, args.threads, d))]
        grpc_port = launch.grpc_port
        if grpc_port and args.grpc:
            grpc_check(grpc_port, workload)
            loads.append(("grpc", lambda c, d: run_h2load(grpc_port, workload, c, d, workdir)))
        for protocol, load in loads:
            try:
                load(max(args.connections), args.warmup)
            except RuntimeError as error:  # a warm-up shorter than one slow answer completes nothing
                print(f"[{peer.name}/{workload.name}] {protocol} warm-up: {str(error).splitlines()[0]}", flush=True)
            for connections in args.connections:
                before_cpu, _ = group_usage(process.pid)
                sampler = PeakRss(process.pid)
                t0 = time.monotonic()
                result = load(connections, args.duration)
                wall = time.monotonic() - t0
                peak = sampler.stop()
                after_cpu, _ = group_usage(process.pid)
                if protocol == "grpc":
                    # h2load sees HTTP statuses only; gRPC errors travel in trailers: ask once more.
                    # h2load cancels the calls in flight when time is up; let them drain first
                    # (MLServer 1.7.1 loses the other requests of a batch that held a cancelled
                    # call: SeldonIO/MLServer#1652).
                    time.sleep(0.5)
                    grpc_check(grpc_port, workload)
                row = Row(peer.name, workload.name, connections, protocol, req_s=result.req_s,
                          p50_ms=result.p50_ms, p99_ms=result.p99_ms, mean_ms=result.mean_ms, errors=result.errors,
                          cpu_pct=100 * (after_cpu - before_cpu) / wall, rss_mb=peak, cold_start_s=cold,
                          note=launch.note)
                rows.append(row)
                raw.append(f"### {peer.name} / {workload.name} / {protocol} / {connections} connections\n\n```\n"
                           f"{result.output.strip()}\n```\n")
                print(f"[{peer.name}/{workload.name}] {protocol} c={connections}: {row.req_s:.0f} req/s,"
                      f" p50 {row.p50_ms:.2f} ms, p99 {row.p99_ms:.2f} ms, CPU {row.cpu_pct:.0f}%,"
                      f" RSS {row.rss_mb:.0f} MiB, errors {row.errors}", flush=True)
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode} during the run:\n{_log_tail(log)}")
    finally:
        stop(process)
    return rows


# -- the report ---------------------------------------------------------------------------


def write_report(path: Path, rows: list[Row], args: argparse.Namespace, versions: dict[str, str],
                 raw: list[str], load_before: str) -> None:
    lines = [
        "# servekit beside other model servers",
        "",
        f"Command: `{shlex.join(['python', *sys.argv])}`",
        "",
        f"Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Machine: {harness.machine_description()}."
        f" Load average before: {load_before}, after: {harness.load_average()}.",
        f"Load: {harness.wrk_version(args.wrk)}, {args.threads} threads, {args.duration:.0f} s per run after a"
        f" {args.warmup:.0f} s warm-up; one row per request; wrk and the server share the machine's cores.",
        "",
        "Versions: " + ", ".join(f"{name} {version}" for name, version in versions.items()),
        "",
    ]
    for workload in args.workloads:
        selected = [row for row in rows if row.workload == workload]
        if not selected:
            continue
        title = Workload.load(args.workload_root / workload).title
        lines += [f"## {title}", "",
                  "| peer | protocol | conns | req/s | p50 ms | p99 ms | mean ms | CPU % | RSS MiB | cold start s"
                  " | errors |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for row, low, high in _median_rows(selected):
            if row.failed:
                lines.append(f"| {row.peer} | | | failed: {row.failed} | | | | | | | |")
                continue
            spread = f" ({low:.0f}-{high:.0f})" if args.rounds > 1 else ""
            lines.append(f"| {row.peer} | {row.protocol} | {row.connections} | {row.req_s:.0f}{spread}"
                         f" | {row.p50_ms:.2f} | {row.p99_ms:.2f}"
                         f" | {row.mean_ms:.2f} | {row.cpu_pct:.0f} | {row.rss_mb:.0f} | {row.cold_start_s:.2f}"
                         f" | {row.errors} |")
        if args.rounds > 1:
            lines += ["", "Each round (req/s / p99 ms), peers run one after the other within a round:", "",
                      "| peer | protocol | conns | " + " | ".join(f"round {n}" for n in range(1, args.rounds + 1))
                      + " |", "|---|---|---:|" + "---:|" * args.rounds]
            for row, _, _ in _median_rows(selected):
                if row.failed:
                    continue
                same = {r.round: r for r in selected if _key(r) == _key(row) and not r.failed}
                cells = [f"{same[n].req_s:.0f} / {same[n].p99_ms:.2f}" if n in same else "-"
                         for n in range(1, args.rounds + 1)]
                lines.append(f"| {row.peer} | {row.protocol} | {row.connections} | " + " | ".join(cells) + " |")
        lines += ["", "How each peer ran it:", ""]
        for peer in dict.fromkeys(row.peer for row in selected):
            notes = {row.note for row in selected if row.peer == peer and row.note}
            lines += [f"- **{peer}**: {'; '.join(sorted(notes)) or '-'}"]
        lines.append("")
    plot = _plot(path, rows, args)
    if plot:
        lines += [f"![req/s and p99 per peer]({plot.name})", ""]
    lines += ["## Raw wrk output", "", *raw]
    path.write_text("\n".join(lines) + "\n")
    path.with_suffix(".json").write_text(json.dumps([asdict(row) for row in rows], indent=1) + "\n")


def _key(row: Row) -> tuple[str, str, str, int]:
    return row.peer, row.workload, row.protocol, row.connections


def _median_rows(rows: list[Row]) -> list[tuple[Row, float, float]]:
    """Per (peer, protocol, connections), in first-seen order: the round with the median req/s
    (the lower middle of an even count) and the min and max req/s over the rounds."""
    groups: dict[tuple[str, str, str, int], list[Row]] = {}
    for row in rows:
        groups.setdefault(_key(row), []).append(row)
    chosen = []
    for group in groups.values():
        ok = sorted((r for r in group if not r.failed), key=lambda r: r.req_s)
        if not ok:
            chosen.append((group[0], 0.0, 0.0))
            continue
        chosen.append((ok[(len(ok) - 1) // 2], ok[0].req_s, ok[-1].req_s))
    return sorted(chosen, key=lambda item: (item[0].protocol != "http", item[0].connections))


def _plot(path: Path, rows: list[Row], args: argparse.Namespace) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    good = [row for row in rows if not row.failed]
    workloads = [w for w in args.workloads if any(row.workload == w for row in good)]
    if not workloads:
        return None
    figure, axes = plt.subplots(len(workloads), 2, figsize=(12, 3.6 * len(workloads)), squeeze=False)
    for index, workload in enumerate(workloads):
        selected = [row for row, _, _ in _median_rows([row for row in good if row.workload == workload])]
        peers = list(dict.fromkeys(row.peer for row in selected))
        combos = list(dict.fromkeys((row.protocol, row.connections) for row in selected))
        width = 0.8 / max(1, len(combos))
        for offset, (protocol, connections) in enumerate(combos):
            by_peer = {row.peer: row for row in selected if (row.protocol, row.connections) == (protocol, connections)}
            xs = np.arange(len(peers)) + offset * width
            label = f"{protocol} c={connections}"
            axes[index][0].bar(xs, [by_peer[p].req_s if p in by_peer else 0 for p in peers], width, label=label)
            axes[index][1].bar(xs, [by_peer[p].p99_ms if p in by_peer else 0 for p in peers], width, label=label)
        for column, label in enumerate(("req/s", "p99 ms (log)")):
            axis = axes[index][column]
            axis.set_xticks(np.arange(len(peers)) + width * (len(combos) - 1) / 2, peers, rotation=20, ha="right")
            axis.set_title(f"{workload}: {label}")
            axis.legend()
        axes[index][1].set_yscale("log")
    figure.tight_layout()
    image = path.with_suffix(".png")
    figure.savefig(image, dpi=90)
    plt.close(figure)
    return image


# -- main ----------------------------------------------------------------------------------


def load_peer(name: str) -> Peer:
    module_name, class_name = PEERS[name].split(":")
    module = importlib.import_module(f"peers.{module_name}")
    peer: Peer = getattr(module, class_name)()
    return peer


def _model_library_pins() -> tuple[str, ...]:
    from importlib.metadata import version

    return tuple(f"{name}=={version(name)}" for name in MODEL_LIBRARIES)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peers", default=",".join(PEERS), help="comma-separated, from: " + ", ".join(PEERS))
    parser.add_argument("--workloads", default="w1,w2,w3")
    parser.add_argument("--connections", default="1,32")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1,
                        help="run the whole peer list this many times, alternating; the table shows each"
                             " row's median round with the min-max req/s, and a per-round table follows")
    parser.add_argument("--workload-root", type=Path, default=Path("benchmarks/results/tmp/workloads"))
    parser.add_argument("--venvs", type=Path, default=Path("benchmarks/results/tmp/venvs"))
    parser.add_argument("--scratch", type=Path, default=Path("benchmarks/results/tmp/peers"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/tmp/peers.md"))
    parser.add_argument("--no-grpc", dest="grpc", action="store_false",
                        help="skip the gRPC runs (h2load) of peers that serve OIP gRPC")
    parser.add_argument("--install-tools", action="store_true", help="apt-get install wrk when missing")
    args = parser.parse_args()
    args.connections = [int(c) for c in args.connections.split(",")]
    args.workloads = args.workloads.split(",")
    args.wrk = harness.ensure_wrk(args.install_tools)
    args.scratch = args.scratch.resolve()
    args.venvs = args.venvs.resolve()
    args.venvs.mkdir(parents=True, exist_ok=True)
    load_before = harness.load_average()

    rows: list[Row] = []
    raw: list[str] = []
    versions: dict[str, str] = {}
    pins = _model_library_pins()
    pythons: dict[str, Path | None] = {}  # peer -> its interpreter, None when it cannot run
    for round_number in range(1, args.rounds + 1):
        for name in args.peers.split(","):
            peer = load_peer(name)
            wanted = [w for w in args.workloads if w in peer.workloads]
            if name not in pythons:
                pythons[name] = _prepare(peer, args, pins, rows, wanted)
                if pythons[name] is not None:
                    versions[name] = _installed_version(pythons[name], peer.version_of or name)
            python = pythons[name]
            if python is None:
                continue
            for workload_name in wanted:
                workload = Workload.load(args.workload_root / workload_name)
                try:
                    measured = measure(peer, python, workload, args, args.wrk, raw)
                except Exception as error:
                    traceback.print_exc()
                    measured = [Row(name, workload_name, 0, failed=str(error).splitlines()[0][:200])]
                for row in measured:
                    row.round = round_number
                rows += measured
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_report(args.out, rows, args, versions, raw, load_before)
    print(f"wrote {args.out}", flush=True)
    return 1 if any(row.failed or row.errors for row in rows) else 0


def _prepare(peer: Peer, args: argparse.Namespace, pins: tuple[str, ...], rows: list[Row],
             wanted: list[str]) -> Path | None:
    """The peer's interpreter (its venv built when needed), or None (a failed row per workload)."""
    why_not = peer.check_system()
    if why_not:
        print(f"[{peer.name}] skipped: {why_not}", flush=True)
        rows += [Row(peer.name, w, 0, failed=f"not run: {why_not}") for w in wanted]
        return None
    try:
        python, spent = ensure_venv(args.venvs, peer, pins) if peer.own_venv else (Path(sys.executable), 0.0)
    except subprocess.CalledProcessError as error:
        rows += [Row(peer.name, w, 0, failed=f"install failed: {error}") for w in wanted]
        return None
    if spent:
        print(f"[{peer.name}] venv built in {spent:.0f} s", flush=True)
    return python


def _installed_version(python: Path, distribution: str) -> str:
    completed = subprocess.run(
        [str(python), "-c", f"from importlib.metadata import version; print(version({distribution!r}))"],
        capture_output=True, text=True, timeout=60)
    return completed.stdout.strip() or "unknown"


if __name__ == "__main__":
    sys.exit(main())
