"""The raw in-process batched throughput of W2: the 100% line for serving it.

    python benchmarks/peers/workloads.py --only w2      # once: writes the W2 folder
    python benchmarks/w2_ceiling.py [--workload benchmarks/results/tmp/workloads/w2] \\
        [--out benchmarks/results/tmp/w2_ceiling.md] [--seconds 3] [--warmup 1]

One process loads W2's model.onnx through the model code every peer runs
(``peers/model_fn.py``: onnxruntime, CPUExecutionProvider, session options and thread
counts left at onnxruntime's defaults, as servekit's own default) and, for each batch
size (1, 2, 4, 8, 16, 32, 64), calls ``predict`` back to back on the sample request's row
repeated to that batch size: a warm-up, then ``--seconds`` of timed calls (at least one).
No HTTP, no serialisation, no queueing: what is left is the runtime itself.

The table gives batches/s, rows/s, mean ms per batch and the process's CPU %; the best rows/s is the figure
the target is measured against: "servekit serving W2 reaches at least 90% of the raw
in-process batched throughput at its best batch size". Numbers depend on the machine and
its neighbours; the header records the machine and the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent / "peers"))

import harness
from model_fn import Model

BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)
TARGET_SHARE = 0.9


def measure(model: Model, sample: dict[str, np.ndarray], batch_size: int, seconds: float,
            warmup: float) -> tuple[int, float, float]:
    """(batches run, wall seconds, CPU seconds of this process) for back-to-back calls at ``batch_size``."""
    feeds = {name: np.repeat(array, batch_size, axis=0) for name, array in sample.items()}
    deadline = time.perf_counter() + warmup
    model.predict(feeds)
    while time.perf_counter() < deadline:
        model.predict(feeds)
    batches = 0
    cpu_started = time.process_time()
    started = time.perf_counter()
    deadline = started + seconds
    while True:
        model.predict(feeds)
        batches += 1
        if time.perf_counter() >= deadline:
            break
    elapsed = time.perf_counter() - started
    return batches, elapsed, time.process_time() - cpu_started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", type=Path, default=Path("benchmarks/results/tmp/workloads/w2"),
                        help="the folder workloads.py wrote (workload.json, model.onnx, sample.npz)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/tmp/w2_ceiling.md"))
    parser.add_argument("--batch-sizes", default=",".join(map(str, BATCH_SIZES)))
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per batch size")
    parser.add_argument("--warmup", type=float, default=1.0, help="untimed seconds per batch size before")
    args = parser.parse_args()
    if not (args.workload / "workload.json").is_file():
        sys.exit(f"no workload at {args.workload}: run python benchmarks/peers/workloads.py --only w2 first")

    load_before = harness.load_average()
    model = Model(args.workload)
    with np.load(args.workload / "sample.npz") as data:
        sample = {name: data[name] for name in model.input_names}
    expected_rows = sample[model.input_names[0]].shape[0]
    if expected_rows != 1:
        sys.exit(f"sample.npz holds {expected_rows} rows; expected one request of one row")

    rows = []
    for batch_size in (int(b) for b in args.batch_sizes.split(",")):
        batches, elapsed, cpu = measure(model, sample, batch_size, args.seconds, args.warmup)
        row = (batch_size, batches / elapsed, batches * batch_size / elapsed, 1000 * elapsed / batches,
               100 * cpu / elapsed)
        rows.append(row)
        print(f"batch {batch_size:3d}: {row[1]:9.2f} batches/s {row[2]:9.1f} rows/s {row[3]:9.2f} ms/batch"
              f" CPU {row[4]:4.0f}%", flush=True)
    best = max(rows, key=lambda r: r[2])

    command = shlex.join(["python", *sys.argv])
    lines = [
        "# W2 ceiling: raw in-process batched throughput",
        "",
        f"Command: `{command}`",
        "",
        f"Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Machine: {harness.machine_description()}."
        f" Load average before: {load_before}, after: {harness.load_average()}.",
        "",
        "Versions: " + harness.library_versions(("onnxruntime", "numpy")),
        "",
        f"Workload: `{args.workload}` ({model.folder.name}, {Model.__module__}.Model: onnxruntime"
        " CPUExecutionProvider, default session options and threads). Each batch size: the sample row"
        f" repeated, {args.warmup:g} s warm-up, then {args.seconds:g} s of back-to-back calls in one process."
        f" CPU %: this process's CPU seconds / wall seconds (at most {100 * (os.cpu_count() or 1)}%; less"
        " means neighbours took the cores).",
        "",
        "| batch size | batches/s | rows/s | ms per batch | CPU % |",
        "|---:|---:|---:|---:|---:|",
        *(f"| {b} | {bps:.2f} | {rps:.1f} | {ms:.2f} | {cpu:.0f} |" for b, bps, rps, ms, cpu in rows),
        "",
        f"Best: **{best[2]:.1f} rows/s** at batch size {best[0]}."
        f" {TARGET_SHARE:.0%} of it (the serving target): {TARGET_SHARE * best[2]:.1f} rows/s.",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-(len(rows) + 4):]))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
