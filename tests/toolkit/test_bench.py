"""servekit bench against a real server (HTTP, the simple API, gRPC), and its pieces without one."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from servekit.cli import main
from servekit.toolkit.bench import BenchOptions, plan_series
from servekit.toolkit.clients import Protocol
from servekit.toolkit.errors import ToolkitError
from servekit.toolkit.http1 import ConnectionPool, build_request
from servekit.toolkit.loadgen import Measurement, closed_loop, open_loop

from ..e2e.harness import ServerProcess
from ..e2e.repos import write_onnx_model

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """onnx_linear (batching on, the default model of /predict) and unbatched (the same model, batching off)."""
    repository = tmp_path_factory.mktemp("bench") / "models"
    write_onnx_model(repository)
    unbatched = write_onnx_model(repository, name="unbatched")
    (unbatched / "config.yaml").write_text("version_policy: {all: true}\nmax_batch_size: 16\n"
                                           "batching: {enabled: false}\n")
    process = ServerProcess(repository, tmp_path_factory.mktemp("logs") / "bench.log", "--default-model",
                            "onnx_linear")
    process.start()
    try:
        yield process
    finally:
        process.stop()


def _bench(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["bench", *args, "--duration", "0.3", "--warmup", "0"], catch_exceptions=False)
    return result.exit_code, result.output


@pytest.mark.e2e
def test_http_sweep_batching_on_against_off_writes_table_json_and_plot(server: ServerProcess, tmp_path: Path) -> None:
    code, output = _bench(server.base_url, "--model", "onnx_linear", "--concurrency", "1,4", "--compare",
                          "model=unbatched", "--out", str(tmp_path))
    assert code == 0, output + server.log()
    assert "1 client " in output and "4 clients" in output and "p99 ms" in output
    assert "unbatched vs onnx_linear at 4 clients:" in output
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["complete"] is True and results["series"][0]["inputs"] == [
        {"name": "x", "datatype": "FP32", "shape": [1, 4]}]
    runs = results["runs"]
    assert [(run["model"], run["protocol"], run["concurrency"], run["mode"]) for run in runs] == [
        ("onnx_linear", "http", 1, "closed"), ("onnx_linear", "http", 4, "closed"),
        ("unbatched", "http", 1, "closed"), ("unbatched", "http", 4, "closed")]
    for run in runs:  # what was measured is consistent; how fast is the machine's business, not a test's
        assert run["requests_ok"] >= 1 and run["errors"] == 0, run
        assert 0 < run["p50_ms"] <= run["p90_ms"] <= run["p99_ms"] <= run["max_ms"]
        assert run["throughput_rps"] > 0 and run["duration_s"] > 0
    assert (tmp_path / "plot.png").read_bytes()[:8] == PNG_MAGIC


@pytest.mark.e2e
def test_simple_api_open_loop_and_binary_http(server: ServerProcess, tmp_path: Path) -> None:
    code, output = _bench(server.base_url, "--model", "onnx_linear", "--protocol", "simple", "--rate", "100",
                          "--out", str(tmp_path / "simple"))
    assert code == 0, output
    run = json.loads((tmp_path / "simple" / "results.json").read_text())["runs"][0]
    assert run["mode"] == "open" and run["target_rate"] == 100 and run["errors"] == 0
    assert run["requests_ok"] == 30  # 100/s for 0.3 s: every one scheduled is sent, however late, and answered
    assert "open loop: latency counts from each request's scheduled start" in output
    code, output = _bench(server.base_url, "--model", "onnx_linear", "--binary", "--concurrency", "2", "--batch", "3")
    assert code == 0, output


@pytest.mark.e2e
def test_grpc_compared_with_http_side_by_side(server: ServerProcess, tmp_path: Path) -> None:
    code, output = _bench(server.grpc_url, "--model", "onnx_linear", "--protocol", "grpc", "--concurrency", "2",
                          "--compare", f"http@{server.base_url}", "--out", str(tmp_path))
    assert code == 0, output
    runs = json.loads((tmp_path / "results.json").read_text())["runs"]
    assert [(run["series"], run["protocol"]) for run in runs] == [("grpc", "grpc"), ("http", "http")]
    assert all(run["requests_ok"] >= 1 and run["errors"] == 0 for run in runs)
    assert "http vs grpc at 2 clients:" in output and "x the req/s" in output


@pytest.mark.e2e
def test_the_time_limit_stops_the_bench_and_keeps_what_it_measured(server: ServerProcess, tmp_path: Path) -> None:
    # Each run lasts at least its 1 s, so 5 of them cannot fit in 3 s: the limit must stop the bench
    # whatever the machine's speed; the first run fits with 2 s to spare for starting it.
    result = CliRunner().invoke(main, ["bench", server.base_url, "--model", "onnx_linear", "--concurrency",
                                       "1,2,3,4,5", "--duration", "1", "--warmup", "0", "--time-limit", "3",
                                       "--out", str(tmp_path)])
    assert result.exit_code == 1 and "INCOMPLETE" in result.output and "stopped at the time limit" in result.output
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["complete"] is False and 1 <= len(results["runs"]) <= 2
    assert [run["concurrency"] for run in results["runs"]] == [1, 2][: len(results["runs"])]


@pytest.mark.e2e
def test_failures_are_reported_before_any_load(server: ServerProcess) -> None:
    code, output = _bench(server.base_url, "--model", "nope")
    assert code == 1 and "HTTP 404" in output and "Traceback" not in output
    code, output = _bench(server.base_url, "--model", "onnx_linear", "--protocol", "grpc")  # an HTTP port
    assert code == 1 and "gRPC" in output


def test_compare_forms() -> None:
    def labels(compare: str, protocol: Protocol = "http") -> list[tuple[str, str, str, str]]:
        options = BenchOptions(url="http://127.0.0.1:9000", model="m", protocol=protocol, compare=compare)
        return [(s.label, s.endpoint.protocol, s.endpoint.address, s.endpoint.model) for s in plan_series(options)]

    assert labels("grpc") == [("http", "http", "http://127.0.0.1:9000", "m"), ("grpc", "grpc", "127.0.0.1:8001", "m")]
    assert labels("grpc@localhost:9001")[1] == ("grpc", "grpc", "localhost:9001", "m")
    assert labels("model=other:2")[1] == ("other:2", "http", "http://127.0.0.1:9000", "other")
    assert labels("http@127.0.0.1:9100")[1] == ("http://127.0.0.1:9100", "http", "http://127.0.0.1:9100", "m")
    assert labels("http://127.0.0.1:9100")[1] == ("http://127.0.0.1:9100", "http", "http://127.0.0.1:9100", "m")
    for bad in ("http", "model=", "model=m", "127.0.0.1:9000", "http@127.0.0.1:9000"):
        with pytest.raises(ToolkitError):
            labels(bad)


def test_closed_loop_is_bounded_and_counts_errors() -> None:
    calls = 0
    started: list[float] = []
    in_flight = peak = 0

    async def send() -> None:
        nonlocal calls, in_flight, peak
        calls += 1
        mine = calls
        started.append(time.perf_counter())
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        if mine % 4 == 0:
            raise ValueError("every fourth")

    measurement = asyncio.run(closed_loop(send, concurrency=3, duration_s=0.3))
    assert measurement.ok + sum(measurement.errors.values()) == calls
    assert measurement.errors["ValueError"] == calls // 4
    assert peak <= 3  # bounded by the concurrency
    # No request starts after the duration (measured from the loop's start, which precedes the first send).
    assert max(started) - min(started) < 0.3
    assert measurement.elapsed_s >= 0.3
    measurement = asyncio.run(closed_loop(send, concurrency=3, duration_s=5, max_requests=7))
    assert measurement.ok + sum(measurement.errors.values()) == 7


def test_open_loop_measures_from_the_schedule_and_cuts_off_stragglers() -> None:
    async def run_all_together() -> Measurement:
        everyone_sent = asyncio.Event()
        sent = 0

        async def held() -> None:  # answers only once all 10 are in flight: none may wait for another
            nonlocal sent
            sent += 1
            if sent == 10:
                everyone_sent.set()
            await everyone_sent.wait()
            await asyncio.sleep(0.2)

        return await open_loop(held, rate=50, duration_s=0.2)

    # 50/s for 0.2 s = 10 requests; latency counts from each one's schedule, so at least its 0.2 s.
    measurement = asyncio.run(run_all_together())
    assert measurement.ok == 10 and min(measurement.latencies) >= 0.2

    cancelled = 0

    async def never() -> None:
        nonlocal cancelled
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled += 1
            raise

    measurement = asyncio.run(open_loop(never, rate=20, duration_s=0.1, grace_s=0.1))
    assert measurement.ok == 0 and measurement.errors["timeout: no answer by the end of the run"] == 2
    assert cancelled == 2  # cut off and cancelled, not left running


def test_http1_client_reads_chunked_and_length_framed_answers() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for answer in (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
                       b"HTTP/1.1 503 Busy\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"):
            while (await reader.readline()) not in (b"\r\n", b""):
                pass
            writer.write(answer)
            await writer.drain()
        writer.close()

    async def run() -> list[tuple[int, bytes]]:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        pool = ConnectionPool(url, 1, timeout_s=5)
        answers = [await pool.send(build_request("GET", url, "/")) for _ in range(2)]
        await pool.aclose()
        server.close()
        return [(answer.status, answer.body) for answer in answers]

    assert asyncio.run(run()) == [(200, b"hello"), (503, b"abcde")]


def test_grpc_without_grpcio_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from servekit.toolkit import clients

    monkeypatch.setitem(sys.modules, "grpc", None)  # as in a core install: `import grpc` fails
    with pytest.raises(ToolkitError, match=r"pip install 'servekit\[grpc\]'"):
        clients._grpc_module()
