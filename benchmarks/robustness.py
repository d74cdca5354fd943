"""How servekit holds up when things go wrong: overload, SIGTERM under load, a crashing model.

    python benchmarks/robustness.py [--duration 60] [--out benchmarks/results/robustness.md]

Not a test: it prints counts and memory, it asserts nothing. One repository, three models:
``slow`` (a Python handler taking 5 ms per batch, batches of up to 8, a queue of 64 requests),
``digits`` (the demo ONNX MLP) and ``crashy`` (a handler that raises on every tenth request).

1. **Overload.** The slow model's capacity is measured with 8 connections for a few seconds;
   then wrk drives it with ten times as many connections for ``--duration`` seconds. Counted:
   answered (200), shed (503 with Retry-After: the queue was full), other statuses, and
   requests lost (a connection closed or timed out with a request on it). The server's resident
   memory (its process group) is sampled every second.
2. **SIGTERM under load.** 32 client threads on the slow model, each sending one request per
   connection (``Connection: close``, so no request can race the close of an idle keep-alive
   connection); SIGTERM after a third of the run. Counted: answered, shed, connections refused
   once every port stopped accepting, and requests lost: sent on an accepted connection and never
   answered (the drain promises none).
3. **A crashing model among healthy ones.** wrk on ``digits`` and on ``crashy`` at once: every
   digits request must be answered 200 while crashy fails one request in ten with 500.

Each wrk run counts statuses in a Lua ``response`` hook (it costs wrk some CPU, which is why the
throughput benchmarks leave it out). Servers listen on 127.0.0.1 on free ports; every run is
bounded in time and every server is stopped, by PID, whatever happens.
"""

from __future__ import annotations

import argparse
import http.client as http_client
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness import ensure_wrk, free_port, http, library_versions, load_average, machine_description, wrk_version

ROW = [0.0] * 64
READY_TIMEOUT_S = 90.0

_COUNTING_LUA = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[{body}]==]
local threads = {{}}
function setup(thread) table.insert(threads, thread) end
function init(args) statuses = {{}} end
function response(status, headers, body) statuses[status] = (statuses[status] or 0) + 1 end
function done(summary, latency, requests)
  local total = {{}}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do total[status] = (total[status] or 0) + count end
  end
  local parts = {{}}
  for status, count in pairs(total) do table.insert(parts, status .. "=" .. count) end
  local e = summary.errors
  io.write(string.format("SERVEKIT_STATUSES %s\\n", table.concat(parts, " ")))
  io.write(string.format("SERVEKIT_ERRORS connect=%d read=%d write=%d timeout=%d p99_us=%d\\n",
    e.connect, e.read, e.write, e.timeout, latency:percentile(99)))
end
"""

_SLOW_HANDLER = """
import time

from servekit import BaseHandler


class Slow(BaseHandler):
    def inference(self, data):
        time.sleep(0.005)
        return {"y": data["x"][:, :1]}
"""

_CRASHY_HANDLER = """
import itertools

from servekit import BaseHandler


class Crashy(BaseHandler):
    def initialize(self, context):
        self.calls = itertools.count()

    def inference(self, data):
        if next(self.calls) % 10 == 9:
            raise RuntimeError("this model fails one call in ten")
        return {"y": data["x"][:, :1]}
"""

_TENSORS = ("inputs: [{name: x, datatype: FP32, shape: [-1, 64]}]\n"
            "outputs: [{name: y, datatype: FP32, shape: [-1, 1]}]\n")


@dataclass
class Counts:
    statuses: dict[int, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    p99_ms: float = 0.0

    @property
    def lost(self) -> int:
        return self.errors.get("read", 0) + self.errors.get("write", 0) + self.errors.get("timeout", 0)


def write_repository(root: Path) -> None:
    subprocess.run([sys.executable, "-m", "servekit", "demo", str(root / "demo"), "--no-torch"], check=True,
                   capture_output=True, timeout=300)
    (root / "models").mkdir(parents=True)
    (root / "demo" / "digits").rename(root / "models" / "digits")
    for name, handler, extra in (("slow", _SLOW_HANDLER, "max_batch_size: 8\nbatching: {max_queue_size: 64}\n"),
                                 ("crashy", _CRASHY_HANDLER, "max_batch_size: 8\n")):
        folder = root / "models" / name
        (folder / "1").mkdir(parents=True)
        (folder / "handler.py").write_text(handler)
        (folder / "config.yaml").write_text(_TENSORS + extra)


class Server:
    def __init__(self, repository: Path, log: Path) -> None:
        self.port = free_port()
        command = [sys.executable, "-m", "servekit", "serve", str(repository), "--host", "127.0.0.1",
                   "--http-port", str(self.port), "--grpc-port", str(free_port()), "--metrics-port", "0",
                   "--management-port", "0", "--log-level", "warning", "--drain-timeout", "10"]
        with log.open("wb") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
            try:
                if http("GET", f"{self.url}/v2/health/ready", timeout=1)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("server not ready")

    def rss_mib(self) -> float:
        """Resident memory of the server's process group (the server and any workers), MiB."""
        total = 0
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if os.getpgid(int(entry.name)) != self.process.pid:
                    continue
                for line in (entry / "status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except (OSError, ProcessLookupError, ValueError):
                continue
        return total / 1024

    def stop(self) -> int | None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                return self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
                return None
        return self.process.returncode


def run_wrk(wrk: str, url: str, script: Path, connections: int, seconds: int) -> tuple[Counts, str]:
    command = [wrk, "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s", str(script), url]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    output = completed.stdout + completed.stderr
    counts = Counts()
    for line in output.splitlines():
        if line.startswith("SERVEKIT_STATUSES"):
            counts.statuses = {int(k): int(v) for k, v in (part.split("=") for part in line.split()[1:])}
        elif line.startswith("SERVEKIT_ERRORS"):
            values = dict(part.split("=") for part in line.split()[1:])
            counts.p99_ms = int(values.pop("p99_us")) / 1000
            counts.errors = {k: int(v) for k, v in values.items()}
    return counts, f"$ {shlex.join(command)}\n{output.strip()}"


def closing_clients(port: int, path: str, clients: int, seconds: float) -> Counts:
    """``clients`` threads sending one request per connection until ``seconds`` pass; each outcome
    counted: a status, ``connect`` (refused), or ``read`` (sent, and the connection ended unanswered)."""
    body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 64], "data": ROW}]}).encode()
    counts = Counts()
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def count(key: int | str) -> None:
        with lock:
            if isinstance(key, int):
                counts.statuses[key] = counts.statuses.get(key, 0) + 1
            else:
                counts.errors[key] = counts.errors.get(key, 0) + 1

    def client() -> None:
        while time.monotonic() < deadline:
            connection = http_client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                connection.connect()
            except OSError:
                count("connect")
                time.sleep(0.01)  # nobody listens any more: do not spin
                continue
            try:
                connection.request("POST", path, body, {"Content-Type": "application/json", "Connection": "close"})
                answer = connection.getresponse()
                answer.read()
                count(answer.status)
            except (OSError, http_client.HTTPException):
                count("read")
            finally:
                connection.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return counts


def _script(folder: Path, name: str) -> Path:
    body = json.dumps({"inputs": [{"name": "input" if name == "digits" else "x", "datatype": "FP32",
                                   "shape": [1, 64], "data": ROW}]})
    path = folder / f"{name}.lua"
    path.write_text(_COUNTING_LUA.format(body=body))
    return path


def _row(label: str, counts: Counts, seconds: float) -> str:
    answered = counts.statuses.get(200, 0)
    shed = counts.statuses.get(503, 0)
    other = sum(n for status, n in counts.statuses.items() if status not in (200, 503))
    return (f"| {label} | {answered:,} ({answered / seconds:,.0f}/s) | {shed:,} | {other:,} | "
            f"{counts.errors.get('connect', 0):,} | {counts.lost:,} | {counts.p99_ms:.1f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=60, help="seconds of the overload run (default 60)")
    parser.add_argument("--out", type=Path, help="write the markdown report here (default: print it)")
    parser.add_argument("--install-tools", action="store_true", help="apt-get install wrk when missing")
    args = parser.parse_args()
    wrk = ensure_wrk(args.install_tools)
    load_before = load_average()
    rows: list[str] = []
    raw: list[str] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="servekit-robust-") as folder:
        scratch = Path(folder)
        write_repository(scratch)
        scripts = {name: _script(scratch, name) for name in ("slow", "digits", "crashy")}

        # 1. overload
        server = Server(scratch / "models", scratch / "overload.log")
        try:
            capacity, output = run_wrk(wrk, f"{server.url}/v2/models/slow/infer", scripts["slow"], 8, 5)
            raw.append(output)
            rows.append(_row("slow model, 8 connections (capacity)", capacity, 5))
            samples: list[float] = [server.rss_mib()]
            stop_sampling = threading.Event()

            def sample() -> None:
                while not stop_sampling.wait(1.0):
                    samples.append(server.rss_mib())

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            overload, output = run_wrk(wrk, f"{server.url}/v2/models/slow/infer", scripts["slow"], 80,
                                       args.duration)
            stop_sampling.set()
            sampler.join()
            raw.append(output)
            rows.append(_row(f"slow model, 80 connections (10x), {args.duration} s", overload, args.duration))
            notes.append(f"RSS of the server during the overload: {samples[0]:.0f} MiB before, "
                         f"min {min(samples):.0f}, max {max(samples):.0f}, last {samples[-1]:.0f} MiB "
                         f"({len(samples)} samples, one a second)")
        finally:
            code = server.stop()
            notes.append(f"overload server: exit code {code}")

        # 2. SIGTERM under load
        server = Server(scratch / "models", scratch / "sigterm.log")
        seconds = 15
        timer = threading.Timer(seconds / 3, lambda: os.killpg(server.process.pid, signal.SIGTERM))
        timer.start()
        try:
            drained = closing_clients(server.port, "/v2/models/slow/infer", 32, seconds)
            rows.append(_row(f"slow model, 32 clients, SIGTERM at {seconds / 3:.0f} s of {seconds}", drained,
                             seconds))
        finally:
            timer.cancel()
            code = server.stop()
            notes.append(f"SIGTERM server: exit code {code} (0: a clean drain)")

        # 3. a crashing model beside a healthy one
        server = Server(scratch / "models", scratch / "crash.log")
        try:
            results: dict[str, tuple[Counts, str]] = {}
            runs = [threading.Thread(target=lambda name=name: results.update({name: run_wrk(
                wrk, f"{server.url}/v2/models/{name}/infer", scripts[name], 16, 15)})) for name in ("digits", "crashy")]
            for run in runs:
                run.start()
            for run in runs:
                run.join()
            for name in ("digits", "crashy"):
                counts, output = results[name]
                raw.append(output)
                rows.append(_row(f"{name} (beside the other), 16 connections", counts, 15))
            alive = server.process.poll() is None
            notes.append(f"crash run: server {'still serving' if alive else 'DIED'} after the run")
        finally:
            server.stop()

    header = [
        "# Robustness: overload, SIGTERM under load, a crashing model", "",
        f"- command: `{shlex.join(['python', 'benchmarks/robustness.py', *sys.argv[1:]])}`",
        f"- date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"- machine: {machine_description()}; load average before / after: {load_before} / {load_average()}",
        f"- load generator: {wrk_version(wrk)}, 2 threads, closed loop, statuses counted in a Lua response hook",
        f"- {library_versions(('servekit', 'uvicorn', 'onnxruntime'))}",
        "", "| run | answered (200) | shed (503) | other statuses | refused connections | lost (no answer) | "
        "p99 ms |", "|---|---:|---:|---:|---:|---:|---:|", *rows, "", *[f"- {note}" for note in notes], "",
        "'Lost' counts requests sent on an accepted connection that ended without an answer (for wrk: its read, "
        "write and timeout errors, a 10 s timeout). Under SIGTERM, 'refused' are connections tried after every "
        "port stopped accepting.",
        "", "<details><summary>wrk output</summary>", "", "```", *raw, "```", "", "</details>", "",
    ]
    text = "\n".join(header)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"wrote {args.out}")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
