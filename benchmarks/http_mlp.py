"""HTTP throughput and latency of the demo digits MLP, batching on vs off, driven by wrk.

    python benchmarks/http_mlp.py [--duration 10] [--connections 1,32] [--out benchmarks/results/http_mlp.md]

For each batching mode a fresh ``servekit serve`` subprocess serves one model, ``digits``
(the demo's ONNX MLP, 64 -> 256 -> 10), bound to 127.0.0.1 on a free port. wrk then
POSTs a one-row request (64 FP32 values) in a closed loop, first to the Open Inference
Protocol route ``/v2/models/digits/infer`` and then to the simple API ``/predict``, at
each connection count. Reported per run: requests/s, p50 and p99 latency (wrk's own
histogram, read in a Lua ``done`` hook), the mean batch size the server formed (from the
change in ``/v2/models/digits/stats`` over the run) and errors (non-2xx responses plus
socket errors). The markdown table is printed and written to ``--out`` with the command,
the date and the machine. ``--profile DIR`` also records the server with py-spy during
each run at the highest connection count and adds a summary of where the time went.

This is a benchmark, not a test: numbers depend on the machine and its neighbours.
wrk and the server share the same CPUs; see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from harness import (
    Server,
    ensure_py_spy,
    ensure_wrk,
    http,
    library_versions,
    load_average,
    machine_description,
    run_wrk,
    serving,
    wrk_script,
    wrk_version,
)
from pyspy_summary import read_profile, summary_markdown

MODEL = "digits"
ROW_WIDTH = 64
WARMUP_S = 2.0
VERSIONS_REPORTED = ("servekit", "uvicorn", "fastapi", "onnxruntime", "numpy", "uvloop", "httptools")

_TENSORS = """\
inputs:
  - {name: input, datatype: FP32, shape: [-1, 64]}
outputs:
  - {name: probabilities, datatype: FP32, shape: [-1, 10]}
  - {name: label, datatype: INT64, shape: [-1]}
simple:
  prediction_output: label
  probability_output: probabilities
"""

# Both modes keep max_batch_size 32 so requests have the same shape and validation;
# only whether the batcher may merge requests differs.
CONFIGS = {
    "on": "max_batch_size: 32\nbatching:\n  max_queue_delay_ms: 2\n" + _TENSORS,
    "off": "max_batch_size: 32\nbatching:\n  enabled: false\n" + _TENSORS,
}


@dataclass(frozen=True)
class Api:
    name: str
    path: str
    body: str


@dataclass
class RunResult:
    api: str
    batching: str
    connections: int
    server: str  # "current", or "before" for the --compare-src servekit
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    mean_batch_size: float
    non_2xx: int
    socket_errors: int
    raw: str
    rate_range: tuple[float, float] | None = None  # min and max req/s over repeats, when repeated


@dataclass
class Bench:
    """What every run shares: the tools, the options and the scratch folder."""

    args: argparse.Namespace
    wrk: str
    py_spy: str | None
    scratch: Path
    profiles: list[tuple[Path, float]]  # each profile and the req/s of its run


# -- the model repositories -----------------------------------------------------------


def write_model(path: Path) -> str:
    """Write the demo digits MLP (servekit.demo, trained on load_digits) as ONNX to ``path``."""
    from servekit.demo import write_demo_repository

    with tempfile.TemporaryDirectory(prefix="servekit-demo-") as scratch:
        write_demo_repository(Path(scratch), include_torch=False)
        shutil.copyfile(Path(scratch) / MODEL / "1" / "model.onnx", path)
    return "servekit.demo, trained on load_digits"


def write_repositories(root: Path, modes: list[str]) -> tuple[dict[str, Path], str]:
    """One repository per batching mode, each holding digits version 1 (the same file)."""
    model_file = root / "model.onnx"
    source = write_model(model_file)
    repositories: dict[str, Path] = {}
    for mode in modes:
        repository = root / f"batching_{mode}"
        version_dir = repository / MODEL / "1"
        version_dir.mkdir(parents=True)
        (repository / MODEL / "config.yaml").write_text(CONFIGS[mode])
        shutil.copyfile(model_file, version_dir / "model.onnx")
        repositories[mode] = repository
    return repositories, source


def request_bodies() -> list[Api]:
    # One fixed digits-like row: integers 0..16 as floats, the demo model's input range.
    row = [float(v) for v in np.random.default_rng(0).integers(0, 17, ROW_WIDTH)]
    oip = {"inputs": [{"name": "input", "shape": [1, ROW_WIDTH], "datatype": "FP32", "data": row}]}
    simple = {"inputs": [row], "return_probabilities": False}
    return [
        Api("OIP /v2/models/digits/infer", f"/v2/models/{MODEL}/infer", json.dumps(oip, separators=(",", ":"))),
        Api("simple /predict", "/predict", json.dumps(simple, separators=(",", ":"))),
    ]


# -- one server ------------------------------------------------------------------------


def model_counts(base: str) -> tuple[int, int]:
    """(rows run, batches run) so far, from the statistics extension."""
    status, body = http("GET", f"{base}/v2/models/{MODEL}/stats")
    if status != 200:
        raise RuntimeError(f"GET /v2/models/{MODEL}/stats answered {status}: {body[:200]!r}")
    stats = json.loads(body)["model_stats"]
    return sum(s["inference_count"] for s in stats), sum(s["execution_count"] for s in stats)


def settled_counts(base: str, quiet_s: float = 0.5, limit_s: float = 30.0) -> tuple[int, int]:
    """Counts once the server has gone ``quiet_s`` without running a row.

    When wrk stops, requests it already sent may still be queued in the server; reading
    the counts before they finish would charge their rows to the next run.
    """
    deadline = time.monotonic() + limit_s
    counts = model_counts(base)
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        latest = model_counts(base)
        if latest == counts:
            return counts
        counts = latest
    return counts


def check_answers(base: str, apis: list[Api]) -> None:
    """One request per API, checked by hand, so a benchmark never times error responses."""
    for api in apis:
        status, body = http("POST", base + api.path, api.body)
        if status != 200:
            raise RuntimeError(f"{api.name} answered {status}: {body[:300]!r}")
        document = json.loads(body)
        if "outputs" not in document and "predictions" not in document:
            raise RuntimeError(f"{api.name} answered an unexpected body: {body[:300]!r}")


def start_profiler(bench: Bench, server: Server, out: Path) -> subprocess.Popen[bytes]:
    """py-spy on the server for the run about to start, writing a raw profile to ``out``."""
    assert bench.py_spy is not None
    seconds = max(1, int(bench.args.duration) - 1)  # inside the run, clear of its ends
    command = [
        bench.py_spy, "record", "-p", str(server.process.pid), "-d", str(seconds), "-r", "100",
        "-f", "raw", "--threads", "--nonblocking", "-o", str(out),
    ]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def measure(
    bench: Bench, server: Server, api: Api, mode: str, connections: int, profile: Path | None = None,
    variant: str = "current",
) -> RunResult:
    """One wrk run; with ``profile``, py-spy records the server to that file meanwhile."""
    script = bench.scratch / "request.lua"
    script.write_text(wrk_script(api.body))
    rows_before, batches_before = settled_counts(server.base_url)
    profiler = start_profiler(bench, server, profile) if profile is not None else None
    try:
        values, raw = run_wrk(
            bench.wrk, server.base_url + api.path, script, connections, bench.args.threads, bench.args.duration
        )
    finally:
        if profiler is not None:
            profiler.wait(timeout=60)
    rows_after, batches_after = settled_counts(server.base_url)
    batches = batches_after - batches_before
    errors = ("connect_errors", "read_errors", "write_errors", "timeout_errors")
    return RunResult(
        api=api.name,
        batching=mode,
        connections=connections,
        server=variant,
        requests_per_s=values["requests"] / (values["duration_us"] / 1e6),
        p50_ms=values["p50_us"] / 1000,
        p99_ms=values["p99_us"] / 1000,
        mean_batch_size=(rows_after - rows_before) / batches if batches else 0.0,
        non_2xx=int(values["status_errors"]),
        socket_errors=int(sum(values[key] for key in errors)),
        raw=raw,
    )


def median_run(repeats: list[RunResult]) -> RunResult:
    """The repeat with the median req/s (the lower middle for an even count), its range attached.

    Errors are summed over every repeat, so none is hidden by picking one run.
    """
    ordered = sorted(repeats, key=lambda r: r.requests_per_s)
    chosen = ordered[(len(ordered) - 1) // 2]
    if len(repeats) == 1:
        return chosen
    chosen.rate_range = (ordered[0].requests_per_s, ordered[-1].requests_per_s)
    chosen.non_2xx = sum(r.non_2xx for r in repeats)
    chosen.socket_errors = sum(r.socket_errors for r in repeats)
    return chosen


def benchmark_mode(bench: Bench, mode: str, repository: Path, apis: list[Api],
                   variant: str = "current") -> tuple[list[RunResult], str]:
    """Serve ``repository``, run every API x connection count, stop the server; results and a note.
    ``variant`` "before" runs the servekit of ``--compare-src`` instead of the installed one."""
    args = bench.args
    results: list[RunResult] = []
    source = args.compare_src if variant == "before" else None
    log_path = bench.scratch / f"server_{mode}_{variant}.log"
    with serving(repository, log_path, source, tuple(args.server_args)) as server:
        print(f"\n== batching {mode} ({variant}): servekit serve {repository} on {server.base_url}", flush=True)
        check_answers(server.base_url, apis)
        warmup = bench.scratch / "warmup.lua"
        for api in apis:
            # Warm-up at the highest concurrency: first-call costs, allocator and thread pools.
            warmup.write_text(wrk_script(api.body))
            run_wrk(bench.wrk, server.base_url + api.path, warmup, max(args.connections), args.threads, WARMUP_S)
            for connections in args.connections:
                repeats = [measure(bench, server, api, mode, connections, variant=variant)
                           for _ in range(args.repeat)]
                result = median_run(repeats)
                if args.profile is not None and connections == max(args.connections):
                    # An extra run: the sampler slows the server, so it stays out of the table.
                    slug = re.sub(r"[^a-z0-9]+", "_", api.name.lower()).strip("_")
                    out = args.profile / f"{mode}_{variant}_{slug}_c{connections}.txt"
                    profiled = measure(bench, server, api, mode, connections, profile=out, variant=variant)
                    bench.profiles.append((out, profiled.requests_per_s))
                print(
                    f"   {api.name:30} {variant:8} c={connections:<3} {result.requests_per_s:9.1f} req/s  "
                    f"p50 {result.p50_ms:7.2f} ms  p99 {result.p99_ms:7.2f} ms  "
                    f"batch {result.mean_batch_size:5.2f}  non-2xx {result.non_2xx}  "
                    f"socket errors {result.socket_errors}",
                    flush=True,
                )
                results.append(result)
    problems = server.log_problems()
    exit_code = "none (killed)" if server.exit_code is None else str(server.exit_code)
    note = (f"batching {mode} ({variant}): server exit code {exit_code}, {len(problems)} ERROR/Traceback line(s) "
            "in its log")
    if problems:
        note += ":\n" + "\n".join(f"    {line}" for line in problems[:10])
    return results, note


# -- the report ------------------------------------------------------------------------


def markdown_table(results: list[RunResult]) -> str:
    lines = [
        "| api | batching | server | connections | req/s | p50 ms | p99 ms | mean batch size | errors |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        rate = f"{r.requests_per_s:.0f}"
        if r.rate_range is not None:
            rate += f" ({r.rate_range[0]:.0f}-{r.rate_range[1]:.0f})"
        lines.append(
            f"| {r.api} | {r.batching} | {r.server} | {r.connections} | {rate} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | "
            f"{r.mean_batch_size:.2f} | {r.non_2xx} non-2xx, {r.socket_errors} socket |"
        )
    return "\n".join(lines)


def report(bench: Bench, results: list[RunResult], notes: list[str], header: dict[str, str]) -> str:
    args = bench.args
    repeat_line = (
        "each cell is one run" if args.repeat == 1 else
        f"each cell is the run with the median req/s of {args.repeat} (min-max req/s in brackets; "
        "latency and batch size from that run; errors summed over all runs)"
    )
    raw = "\n\n".join(
        f"### {r.api}, batching {r.batching}, {r.server}, {r.connections} connection(s)\n\n```\n{r.raw.strip()}\n```"
        for r in results
    )
    note_lines = "\n".join(f"- {note}" for note in notes)
    if args.compare_src is not None:
        repeat_line += (f"\n- server `current`: the installed servekit; `before`: the servekit in "
                        f"`{args.compare_src}`, run right after `current` for each mode")
    if args.server_args:
        repeat_line += f"\n- extra `servekit serve` arguments: `{shlex.join(args.server_args)}`"
    text = f"""# HTTP benchmark: demo digits MLP, batching on vs off

- command: `{header["command"]}`
- date: {header["date"]}
- machine: {machine_description()}; load average (1/5/15 min) {header["loads"]}
- software: {library_versions(VERSIONS_REPORTED)}; {header["wrk"]}
- model: `{MODEL}` version 1, ONNX MLP 64 -> 256 -> 10 ({header["model"]}); onnxruntime defaults
- batching on: `max_batch_size: 32`, `max_queue_delay_ms: 2`; batching off: `batching: {{enabled: false}}`
- load: wrk, {args.threads} threads (at most one per connection), closed loop, {args.duration:g} s per run after a
  {WARMUP_S:g} s warm-up per API; every request is one row of 64 FP32 values; one uvicorn worker on 127.0.0.1
- {repeat_line}
- latency is wrk's (request sent to response read, at the client); mean batch size is rows / batches
  from `/v2/models/{MODEL}/stats` over the run; errors are wrk's non-2xx count (status > 399) and socket errors

{markdown_table(results)}

Server runs:

{note_lines}

wrk and the server share the same {os.cpu_count()} CPUs, so these numbers measure the pair; see benchmarks/README.md.
"""
    for path, rate in bench.profiles:
        text += f"""
## Profile: {path.stem} (py-spy, Python frames, 100 Hz)

Recorded during an extra run, left out of the table ({rate:.0f} req/s with the sampler attached).
Raw collapsed stacks: `{path}` (opens in https://www.speedscope.app).

{summary_markdown(read_profile(path), top=12) if path.is_file() else "(py-spy wrote no profile)"}
"""
    return text + f"""
<details><summary>Raw wrk output of the reported runs</summary>

{raw}

</details>
"""


# -- main ------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="HTTP req/s and latency of the demo MLP, batching on vs off (wrk).")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured run (default 10)")
    parser.add_argument("--connections", default="1,32", help="comma-separated connection counts (default 1,32)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per cell; the median-req/s run is reported "
                        "with the min-max req/s range beside it (default 1)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--batching", default="on,off", help="modes to run: on, off or on,off (default)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/http_mlp.md"), help="markdown report")
    parser.add_argument("--profile", type=Path, metavar="DIR", help="record the server with py-spy during each "
                        "run at the highest connection count; raw profiles go to DIR, summaries to the report")
    parser.add_argument("--compare-src", type=Path, metavar="DIR", help="also run each mode with the servekit "
                        "in DIR (a src folder, e.g. a copy of the code before a change), rows marked 'before'")
    parser.add_argument("--server-arg", dest="server_args", action="append", default=[], metavar="ARG",
                        help="extra argument for every `servekit serve` (repeatable), e.g. --server-arg=--workers=2")
    parser.add_argument("--install-tools", action="store_true",
                        help="install what is missing: wrk with apt-get, py-spy with pip")
    args = parser.parse_args(argv)
    try:
        args.connections = [int(c) for c in args.connections.split(",") if c.strip()]
    except ValueError:
        parser.error("--connections takes integers, e.g. 1,32")
    if not args.connections or min(args.connections) < 1:
        parser.error("--connections needs at least one positive integer")
    if args.compare_src is not None and not (args.compare_src / "servekit" / "__init__.py").is_file():
        parser.error("--compare-src must be a folder holding a servekit package (e.g. a copy of src/)")
    args.batching = [m.strip() for m in args.batching.split(",") if m.strip()]
    if not args.batching or any(m not in CONFIGS for m in args.batching):
        parser.error("--batching takes on, off or on,off")
    if args.duration < 2 or args.threads < 1 or args.repeat < 1:
        parser.error("--duration must be at least 2 s, --threads and --repeat at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wrk = ensure_wrk(args.install_tools)
    py_spy = ensure_py_spy(args.install_tools) if args.profile else None
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    header = {
        "command": shlex.join(["python", *(sys.argv if argv is None else ["benchmarks/http_mlp.py", *argv])]),
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "wrk": wrk_version(wrk),
    }
    load_before = load_average()
    if load_before != "unknown" and float(load_before.split()[0]) > 0.5 * (os.cpu_count() or 1):
        print(f"warning: load average {load_before} before starting; other work will skew the numbers", flush=True)
    apis = request_bodies()
    results: list[RunResult] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="servekit-bench-") as scratch:
        bench = Bench(args, wrk, py_spy, Path(scratch), [])
        repositories, header["model"] = write_repositories(bench.scratch, args.batching)
        variants = ["current", "before"] if args.compare_src else ["current"]
        for mode in args.batching:
            # With --compare-src the two servers of a mode run back to back, so both see the same machine.
            for variant in variants:
                mode_results, note = benchmark_mode(bench, mode, repositories[mode], apis, variant)
                results.extend(mode_results)
                notes.append(note)
    header["loads"] = f"{load_before} before, {load_average()} after"
    results.sort(key=lambda r: (r.api, r.batching != "on", r.connections, r.server != "before"))
    print("\n" + markdown_table(results) + "\n")
    for note in notes:
        print(note)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report(bench, results, notes, header))
    print(f"\nwrote {args.out}")
    return 1 if any(r.non_2xx or r.socket_errors for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
