"""The metrics server over files written by other processes: sums, dead workers, process metrics."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from servekit.observability.exposition import MULTIPROC_ENV, MetricsServer, use_multiprocess_dir

WORKER = """
import sys, time
from prometheus_client import Counter, Gauge
Counter("servekit_test_requests", "r", ["model"]).labels("m").inc(int(sys.argv[1]))
Gauge("servekit_test_depth", "d", ["model"], multiprocess_mode="livesum").labels("m").set(int(sys.argv[1]))
print("ready", flush=True)
sys.stdin.readline()  # stay alive until told to go
"""


def _worker(folder: Path, value: int) -> subprocess.Popen[str]:
    process = subprocess.Popen([sys.executable, "-c", WORKER, str(value)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True, env={**os.environ, MULTIPROC_ENV: str(folder)})
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    return process


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[tuple[MetricsServer, int]]:
    metrics = MetricsServer(tmp_path, remove_folder=False)
    port = metrics.start("127.0.0.1", 0)
    try:
        yield metrics, port
    finally:
        metrics.stop()


def test_workers_are_summed_and_a_dead_one_keeps_its_counters_not_its_gauges(
        server: tuple[MetricsServer, int], tmp_path: Path) -> None:
    _, port = server
    first, second = _worker(tmp_path, 2), _worker(tmp_path, 5)
    try:
        seen = _scrape(port)
        assert seen["servekit_test_requests_total", (("model", "m"),)] == 7
        assert seen["servekit_test_depth", (("model", "m"),)] == 7
        first.communicate("\n", timeout=10)
        seen = _scrape(port)
        assert seen["servekit_test_requests_total", (("model", "m"),)] == 7  # counters never go back
        assert seen["servekit_test_depth", (("model", "m"),)] == 5  # only the live worker's depth
    finally:
        for process in (first, second):
            if process.poll() is None:
                process.communicate("\n", timeout=10)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="process metrics come from Linux /proc")
def test_process_metrics_cover_this_process_and_its_children(server: tuple[MetricsServer, int],
                                                              tmp_path: Path) -> None:
    _, port = server
    child = _worker(tmp_path, 1)
    try:
        seen = _scrape(port)
    finally:
        child.communicate("\n", timeout=10)
    pids = {dict(labels)["pid"] for name, labels in seen if name == "process_resident_memory_bytes"}
    assert {str(os.getpid()), str(child.pid)} <= pids
    assert seen["process_cpu_seconds_total", (("pid", str(os.getpid())),)] > 0


def test_a_named_folder_is_emptied_of_old_values_and_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "counter_1.db").write_bytes(b"old")
    (tmp_path / "triton_summaries_1.json").write_text("[]")  # a worker's Triton summaries of the last run
    (tmp_path / "notes.txt").write_text("not ours")
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    folder, ours = use_multiprocess_dir()
    assert (folder, ours) == (tmp_path, False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_otherwise_a_fresh_folder_that_stop_removes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MULTIPROC_ENV, "")  # unset for the function; restored (absent) after the test
    folder, ours = use_multiprocess_dir()
    assert ours and folder.is_dir() and os.environ[MULTIPROC_ENV] == str(folder)
    MetricsServer(folder, remove_folder=True).stop()
    assert not folder.exists()
