"""What running a model in its own process (``isolation: process``) costs and buys, measured.

    python benchmarks/isolation.py [--duration 10] [--connections 32] [--calls 2000] \\
                                   [--out benchmarks/results/isolation.md]

Three parts, each printed and written to ``--out`` with the command, the date, the machine and
its load average:

1. Transport: one call of a model whose input is N bytes and whose output is 4 bytes, in its
   own process, with the input pickled through the pipe or laid out in the shared region
   (servekit.runtimes.shared_tensors). What ``INLINE_BELOW_BYTES`` is chosen from.
2. Per call, no server: the median time of ``runtime.predict`` in the server's process and
   isolated, for the demo MLP (ONNX and the numpy handler) at 1 and 32 rows, a RandomForest
   (50 trees on load_digits) at 1 and 32 rows, and a 4 MiB tensor through an identity handler.
3. Served: ``servekit serve`` with one model, in-process or isolated, ``instances`` 1 and 2,
   driven by wrk (closed loop, one row per request) at ``--connections``: requests/s, p50/p99,
   the CPU the server and its model processes used (cores, from /proc), and their memory.

This is a benchmark, not a test: wrk, the server and the model processes share the machine's
cores, and numbers depend on the machine and its neighbours. The report says how many cores two
plain busy processes got before and after the runs: on a machine that gives less than two, no
row can show a second instance adding a core, whatever the isolation.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shlex
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import numpy as np
from harness import (
    ensure_wrk,
    library_versions,
    load_average,
    machine_description,
    run_wrk,
    serving,
    wrk_script,
    wrk_version,
)

from servekit.config import parse_model_config
from servekit.demo import write_demo_repository
from servekit.runtimes import Arrays, Runtime, RuntimeContext, create_runtime, shared_tensors

WARMUP_S = 2.0
ROUNDS = 3  # per-call measurements alternate this many times
TRANSPORT_SIZES = (256, 1024, 4 * 1024, 8 * 1024, 64 * 1024, 1024 * 1024, 4 * 1024 * 1024)
FOREST_TREES = 50

SUM_HANDLER = '''
import numpy as np
from servekit import BaseHandler


class Sum(BaseHandler):
    def inference(self, data):
        return {"s": np.zeros(1, dtype=np.float32)}
'''

IDENTITY_HANDLER = '''
from servekit import BaseHandler


class Identity(BaseHandler):
    def inference(self, data):
        return {"y": data["x"]}
'''


def _spin(seconds: float) -> float:
    """Busy-loop for ``seconds`` of wall time; returns the CPU seconds it got."""
    cpu, until = time.process_time(), time.monotonic() + seconds
    while time.monotonic() < until:
        pass
    return time.process_time() - cpu


def cores_available(seconds: float = 3.0) -> str:
    """How many cores two plain busy processes get together right now: the most any row below
    could use (neighbours on a shared machine take the rest)."""
    started = time.monotonic()
    with ProcessPoolExecutor(2) as pool:
        cpu = sum(pool.map(_spin, [seconds, seconds]))
    return f"{cpu / (time.monotonic() - started):.2f}"


def write_repository(root: Path) -> None:
    """The demo models, a RandomForest, and the two transport handlers."""
    write_demo_repository(root, include_torch=False)
    import skops.io
    from sklearn.datasets import load_digits
    from sklearn.ensemble import RandomForestClassifier

    digits = load_digits()
    forest = RandomForestClassifier(n_estimators=FOREST_TREES, random_state=0).fit(digits.data, digits.target)
    (root / "forest" / "1").mkdir(parents=True)
    skops.io.dump(forest, root / "forest" / "1" / "model.skops")
    (root / "forest" / "config.yaml").write_text(
        "runtime: sklearn\nmax_batch_size: 32\nbatching: {max_queue_delay_ms: 2}\n"
        "parameters: {trusted_types: [sklearn.tree._tree.Tree]}\n")
    for name, source in (("sum", SUM_HANDLER), ("identity", IDENTITY_HANDLER)):
        (root / name / "1").mkdir(parents=True)
        (root / name / "handler.py").write_text(source)
        (root / name / "config.yaml").write_text("max_batch_size: 0\n")


@contextmanager
def loaded(root: Path, model: str, runtime_name: str, isolated: bool) -> Iterator[Runtime]:
    model_dir = root / model
    config = parse_model_config((model_dir / "config.yaml").read_text(), model_dir / "config.yaml")
    runtime = create_runtime(runtime_name, RuntimeContext(model, 1, model_dir, model_dir / "1", config),
                             isolated=isolated)
    runtime.load()
    try:
        yield runtime
    finally:
        runtime.unload()


def median_us(call: Callable[[], object], calls: int) -> float:
    for _ in range(max(3, calls // 20)):
        call()
    timings = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings) * 1e6


def interleaved(calls: list[Callable[[], object]], n: int, rounds: int = ROUNDS) -> list[float]:
    """The median µs of each call, measured in alternating rounds (so that a change in the
    machine's load meanwhile hits every call alike): the median of each call's round medians."""
    medians: list[list[float]] = [[] for _ in calls]
    for _ in range(rounds):
        for index, call in enumerate(calls):
            medians[index].append(median_us(call, n))
    return [statistics.median(values) for values in medians]


def call_with_threshold(runtime: Runtime, inputs: Arrays, threshold: int) -> None:
    setattr(shared_tensors, "INLINE_BELOW_BYTES", threshold)  # noqa: B010 - the server side only
    runtime.predict(inputs)


def transport(root: Path, calls: int) -> list[str]:
    """Part 1: the same call with its input pickled vs in the shared region."""
    lines = ["| input bytes | pickled through the pipe, µs | shared memory, µs | shared / pickled |",
             "|---:|---:|---:|---:|"]
    default = shared_tensors.INLINE_BELOW_BYTES
    with loaded(root, "sum", "python", isolated=True) as runtime:
        for size in TRANSPORT_SIZES:
            inputs = {"x": np.ones(size // 4, dtype=np.float32)}
            n = calls // ROUNDS if size <= 64 * 1024 else max(50, calls // 10)
            pickled, shared = interleaved([partial(call_with_threshold, runtime, inputs, sys.maxsize),
                                           partial(call_with_threshold, runtime, inputs, 0)], n)
            lines.append(f"| {size:,} | {pickled:.0f} | {shared:.0f} | {shared / pickled:.2f} |")
            print(lines[-1], flush=True)
    setattr(shared_tensors, "INLINE_BELOW_BYTES", default)  # noqa: B010
    return lines


PER_CALL = (
    # (label, model, runtime, input name, rows or a fixed shape)
    ("demo MLP, ONNX", "digits", "onnx", "input", 1),
    ("demo MLP, ONNX", "digits", "onnx", "input", 32),
    ("demo MLP, numpy handler", "digits_handler", "python", "input", 1),
    ("demo MLP, numpy handler", "digits_handler", "python", "input", 32),
    ("RandomForest, 50 trees", "forest", "sklearn", "input", 1),
    ("RandomForest, 50 trees", "forest", "sklearn", "input", 32),
    ("identity handler, 4 MiB in and out", "identity", "python", "x", (1024, 1024)),
)


def per_call(root: Path, calls: int) -> list[str]:
    """Part 2: predict() in the server's process vs isolated, no server."""
    lines = ["| model | rows | in-process µs | isolated µs | isolation adds µs |", "|---|---:|---:|---:|---:|"]
    pixels = np.tile(np.arange(64, dtype=np.float32) % 17, (32, 1))
    for label, model, runtime_name, input_name, rows in PER_CALL:
        if isinstance(rows, tuple):
            inputs = {input_name: np.ones(rows, dtype=np.float32)}
            shown = f"{rows[0]}x{rows[1]} FP32"
        else:
            inputs = {input_name: pixels[:rows].copy()}
            shown = str(rows)
        n = calls // ROUNDS if model in ("digits", "digits_handler") else max(50, calls // 20)
        with loaded(root, model, runtime_name, False) as local, loaded(root, model, runtime_name, True) as isolated:
            timings = interleaved([partial(local.predict, inputs), partial(isolated.predict, inputs)], n)
        lines.append(f"| {label} | {shown} | {timings[0]:.0f} | {timings[1]:.0f} | {timings[1] - timings[0]:.0f} |")
        print(lines[-1], flush=True)
    return lines


SCALED = (("demo MLP, numpy handler", "digits_handler", "python"), ("RandomForest, 50 trees", "forest", "sklearn"))


def parallel_calls(runtimes: list[Runtime], inputs: Arrays, seconds: float) -> tuple[float, float]:
    """One thread per runtime calling it in a loop for ``seconds``: (calls per second, cores used)."""
    for runtime in runtimes:
        runtime.predict(inputs)
    counts = [0] * len(runtimes)
    stop = threading.Event()

    def caller(index: int) -> None:
        while not stop.is_set():
            runtimes[index].predict(inputs)
            counts[index] += 1

    threads = [threading.Thread(target=caller, args=(index,)) for index in range(len(runtimes))]
    cpu_before = cpu_and_memory(os.getpid())[0]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    return sum(counts) / elapsed, (cpu_and_memory(os.getpid())[0] - cpu_before) / elapsed


def scaling(root: Path, seconds: float) -> list[str]:
    """Part 2b: N threads, each calling its own instance with 32-row batches for ``seconds``; the
    batches per second and the cores this process and its model processes used meanwhile."""
    lines = ["| model | isolation | instances (one caller thread each) | batches/s | CPU used, cores |",
             "|---|---|---:|---:|---:|"]
    pixels = {"input": np.tile(np.arange(64, dtype=np.float32) % 17, (32, 1))}
    for label, model, runtime_name in SCALED:
        for isolated in (False, True):
            for instances in (1, 2):
                with contextlib.ExitStack() as stack:
                    runtimes = [stack.enter_context(loaded(root, model, runtime_name, isolated))
                                for _ in range(instances)]
                    rate, cores = parallel_calls(runtimes, pixels, seconds)
                isolation = "process" if isolated else "none"
                lines.append(f"| {label} | {isolation} | {instances} | {rate:.0f} | {cores:.2f} |")
                print(lines[-1], flush=True)
    return lines


def cpu_and_memory(pid: int) -> tuple[float, int, int]:
    """(CPU seconds of ``pid`` and its model processes, RSS of ``pid`` in bytes, RSS of the model processes)."""
    tick = os.sysconf("SC_CLK_TCK")
    page = os.sysconf("SC_PAGE_SIZE")
    cpu, server_rss, children_rss = 0.0, 0, 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry.name) != pid and int(fields[1]) != pid:
            continue
        cpu += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        rss = int(fields[21]) * page
        if int(entry.name) == pid:
            server_rss = rss
        else:
            children_rss += rss
    return cpu, server_rss, children_rss


SERVED = (("demo MLP, numpy handler", "digits_handler"), ("demo MLP, ONNX", "digits"),
          ("RandomForest, 50 trees", "forest"))


def served(root: Path, wrk: str, duration: float, connections: int, repeat: int, scratch: Path) -> list[str]:
    """Part 3: req/s at ``connections`` with wrk, in-process vs isolated, 1 and 2 instances; the
    run with the median req/s of ``repeat`` runs against one server."""
    lines = ["| model | isolation | instances | req/s (min-max) | p50 ms | p99 ms | CPU used, cores | CPU µs per "
             "request | server RSS MiB | model processes RSS MiB | errors |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    row = (np.arange(64) % 17).astype(float).tolist()
    body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": row}]})
    script = scratch / "infer.lua"
    script.write_text(wrk_script(body))
    for label, model in SERVED:
        for isolation in ("none", "process"):
            for instances in (1, 2):
                repository = scratch / f"{model}-{isolation}-{instances}"
                (repository / model).mkdir(parents=True)
                for item in (root / model).iterdir():
                    target = repository / model / item.name
                    target.symlink_to(item) if item.name != "config.yaml" else None
                config = (root / model / "config.yaml").read_text()
                (repository / model / "config.yaml").write_text(
                    f"{config}\nisolation: {isolation}\ninstances: {instances}\n")
                runs: list[tuple[float, dict[str, float], float, float]] = []
                with serving(repository, scratch / f"{repository.name}.log") as server:
                    url = f"{server.base_url}/v2/models/{model}/infer"
                    run_wrk(wrk, url, script, connections, 2, WARMUP_S)
                    for _ in range(repeat):
                        cpu_before, _, _ = cpu_and_memory(server.process.pid)
                        started = time.monotonic()
                        result, _ = run_wrk(wrk, url, script, connections, 2, duration)
                        cpu_after, server_rss, children_rss = cpu_and_memory(server.process.pid)
                        cpu = cpu_after - cpu_before
                        rps = result["requests"] / (result["duration_us"] / 1e6)
                        runs.append((rps, result, cpu / (time.monotonic() - started), cpu / result["requests"] * 1e6))
                runs.sort(key=lambda run: run[0])
                rps, result, cores, cpu_per_request = runs[len(runs) // 2]
                errors = sum(int(r["status_errors"] + r["connect_errors"] + r["read_errors"] + r["write_errors"]
                                 + r["timeout_errors"]) for _, r, _, _ in runs)
                children = f"{children_rss / 2**20:.0f}" if isolation == "process" else "-"
                spread = f"{runs[0][0]:.0f}-{runs[-1][0]:.0f}"
                lines.append(f"| {label} | {isolation} | {instances} | {rps:.0f} ({spread}) | "
                             f"{result['p50_us'] / 1000:.2f} | {result['p99_us'] / 1000:.2f} | {cores:.2f} | "
                             f"{cpu_per_request:.0f} | {server_rss / 2**20:.0f} | {children} | {errors} |")
                print(lines[-1], flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (after a warm-up)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--calls", type=int, default=2000, help="calls per per-call measurement (fast models)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "isolation.md")
    parser.add_argument("--repeat", type=int, default=3, help="wrk runs per served configuration (median shown)")
    parser.add_argument("--scaling-seconds", type=float, default=5.0, help="seconds per part 2b measurement")
    parser.add_argument("--skip-served", action="store_true", help="parts 1 and 2 only (no wrk)")
    args = parser.parse_args()
    wrk = None if args.skip_served else ensure_wrk(install=False)
    command = "python benchmarks/isolation.py " + shlex.join(sys.argv[1:])
    load_before = load_average()
    available_before = cores_available()
    with tempfile.TemporaryDirectory(prefix="servekit-isolation-") as scratch_name:
        scratch = Path(scratch_name)
        root = scratch / "models"
        write_repository(root)
        print("1. transport", flush=True)
        transport_lines = transport(root, args.calls)
        print("2. per call", flush=True)
        per_call_lines = per_call(root, args.calls)
        print("2b. scaling", flush=True)
        scaling_lines = scaling(root, args.scaling_seconds)
        served_lines: list[str] = []
        if wrk is not None:
            print("3. served", flush=True)
            served_lines = served(root, wrk, args.duration, args.connections, args.repeat, scratch)
    report = [
        "# Isolation: models in their own processes, measured",
        "",
        f"- command: `{command}`",
        f"- date: {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}",
        f"- machine: {machine_description()}; load average (1/5/15 min) {load_before} before, {load_average()} after",
        f"- software: {library_versions(('servekit', 'numpy', 'onnxruntime', 'scikit-learn', 'uvicorn'))}"
        + (f"; {wrk_version(wrk)}" if wrk else ""),
        f"- cores available: two plain busy-looping processes got {available_before} cores together before the "
        f"runs, {cores_available()} after (the most any row below could use)",
        f"- shared-memory threshold (`INLINE_BELOW_BYTES`): {shared_tensors.INLINE_BELOW_BYTES:,} bytes",
        "",
        "## 1. Transport: an input of N bytes to a model's process and a 4-byte answer back",
        "",
        "Median of one `predict` call on a handler that ignores its input, isolated, with the input",
        "pickled into the control message or written into the shared region (the answer is inline);",
        f"the two alternate in {ROUNDS} rounds, each cell is the median of its rounds' medians.",
        "",
        *transport_lines,
        "",
        "## 2. Per call, no server: `runtime.predict` in the server's process vs isolated",
        "",
        f"Median over many calls (after a warm-up), one caller, the model's default threads; the two alternate in "
        f"{ROUNDS} rounds,",
        "each cell is the median of its rounds' medians.",
        "",
        *per_call_lines,
        "",
        "## 2b. Parallel calls, no server: does a second instance add a core?",
        "",
        "One caller thread per instance, each calling its own instance with 32-row batches for "
        f"{args.scaling_seconds:g} s;",
        "CPU used: CPU seconds of this process and its model processes / wall time.",
        "",
        *scaling_lines,
    ]
    if served_lines:
        report += [
            "",
            f"## 3. Served: wrk, {args.connections} connections, one row per request, {args.duration:g} s per run, "
            f"median of {args.repeat}",
            "",
            "One `servekit serve` (one worker, HTTP only) per row, OIP JSON `POST /v2/models/M/infer`, after a",
            f"{WARMUP_S:g} s warm-up; batching as the demo configures it (`max_batch_size: 32`, 2 ms). CPU used:",
            "CPU seconds of the server and its model processes over the run / its wall time (wrk's own CPU",
            "is not counted; it shares the same cores); CPU µs per request: the same CPU seconds / requests",
            "answered (what a request costs, whatever share of the machine the run got). RSS at the end.",
            "",
            *served_lines,
        ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(report) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
