"""``serve --triton-metrics --triton-metrics-config summary_latencies=true`` (docs/triton.md's example)
on a Triton python-backend repository: the pending count while a batch is held, the latency
summaries, the response-cache series and the machine gauges, read from a real server's metrics page
with prometheus-client's parser (what tritonserver 2.51.0 writes for the same:
tests/formats/triton/README.md)."""

from __future__ import annotations

import math
import shlex
import textwrap
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil
import pytest
import tritonclient.http as httpclient
from prometheus_client.parser import text_string_to_metric_families

from tests.gate import GATE_HANDLER_CODE, Gate, wait_for

from .harness import ServerProcess, answers_from_two_workers
from .repos import write_whoami_model
from .scrape import Samples, scrape

QUANTILES = {"0.5", "0.9", "0.95", "0.99", "0.999"}  # Triton's defaults
SUMMARIES = ("nv_inference_request_summary_us", "nv_inference_queue_summary_us",
             "nv_inference_compute_input_summary_us", "nv_inference_compute_infer_summary_us",
             "nv_inference_compute_output_summary_us")

# A python-backend model: Y = 2 * X; "pyhold" holds each execute at the test's gate (tests/gate.py).
CONFIG = """
backend: "python"
max_batch_size: 4
input [ { name: "X" data_type: TYPE_FP32 dims: [ 1 ] } ]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ 1 ] } ]
instance_group [ { count: 1 kind: KIND_CPU } ]
dynamic_batching { }
"""
MODEL = '''
import triton_python_backend_utils as pb_utils
''' + GATE_HANDLER_CODE + '''

GATE = "@GATE@"


class TritonPythonModel:
    def execute(self, requests):
        xs = [pb_utils.get_input_tensor_by_name(r, "X").as_numpy() for r in requests]
        wait_at_gate(GATE, [x[0, 0] for x in xs])
        return [pb_utils.InferenceResponse([pb_utils.Tensor("Y", x * 2)]) for x in xs]
'''


def _write_model(root: Path, name: str, gate: str, cached: bool = False) -> None:
    folder = root / name
    (folder / "1").mkdir(parents=True)
    config = textwrap.dedent(CONFIG) + ("response_cache { enable: true }\n" if cached else "")
    (folder / "config.pbtxt").write_text(config, encoding="utf-8")
    (folder / "1" / "model.py").write_text(MODEL.replace("@GATE@", gate), encoding="utf-8")


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory) -> Gate:
    return Gate(tmp_path_factory.mktemp("gate"), opened=True)


@pytest.fixture(scope="module")
def server(gate: Gate, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repository = tmp_path_factory.mktemp("triton-extra") / "models"
    _write_model(repository, "pyhold", str(gate))
    for name in ("pysum", "pyidle"):
        _write_model(repository, name, "")
    _write_model(repository, "pycached", "", cached=True)
    process = ServerProcess(repository, tmp_path_factory.mktemp("logs") / "triton-extra.log", *_documented_flags())
    process.start()
    try:
        yield process
    finally:
        process.stop()


def _documented_flags() -> list[str]:
    """The flags of docs/triton.md's example command (``servekit serve models --triton-metrics ...``)."""
    page = (Path(__file__).resolve().parents[2] / "docs" / "triton.md").read_text(encoding="utf-8")
    command = next(line for line in page.splitlines() if line.startswith("servekit serve models --triton-metrics"))
    flags = shlex.split(command)[3:]
    assert flags == ["--triton-metrics", "--triton-metrics-config", "summary_latencies=true"], flags
    return flags


def _infer(server: ServerProcess, model: str, value: float) -> float:
    client = httpclient.InferenceServerClient(server.url)
    try:
        x = httpclient.InferInput("X", [1, 1], "FP32")
        x.set_data_from_numpy(np.array([[value]], dtype=np.float32))
        return float(client.infer(model, [x]).as_numpy("Y")[0, 0])
    finally:
        client.close()


def _families(server: ServerProcess) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    """name -> (sample name, labels, value) of every family on the page, as Prometheus's parser reads it."""
    text = scrape(server.metrics_url).text
    return {family.name: [(s.name, s.labels, s.value) for s in family.samples]
            for family in text_string_to_metric_families(text)}


def _pending(server: ServerProcess, model: str) -> float:
    return scrape(server.metrics_url).total("nv_inference_pending_request_count", model=model, version="1")


def test_the_pending_count_is_the_requests_queued_behind_a_held_batch(server: ServerProcess, gate: Gate) -> None:
    assert _pending(server, "pyhold") == 0  # there from the start, at 0 (as in Triton)
    with ThreadPoolExecutor(max_workers=4) as pool, gate.held() as before:
        first = pool.submit(_infer, server, "pyhold", 1.0)
        gate.wait_batches(before + 1)  # executing, held: not pending
        assert _pending(server, "pyhold") == 0
        queued = [pool.submit(_infer, server, "pyhold", float(value)) for value in (2, 3, 4)]
        wait_for(lambda: _pending(server, "pyhold") == 3, "three requests pending behind the held batch")
        page = scrape(server.metrics_url)
        assert page.total("servekit_queue_depth", model="pyhold") == 3  # the same queue, by servekit's name
        families = _families(server)
        assert {labels["model"] for _, labels, _ in families["nv_inference_pending_request_count"]} == {
            "pyhold", "pysum", "pyidle", "pycached"}
    # The gate is open again: the queued requests run and leave the queue.
    assert first.result(timeout=60) == 2.0
    assert [future.result(timeout=60) for future in queued] == [4.0, 6.0, 8.0]
    wait_for(lambda: _pending(server, "pyhold") == 0, "the pending count back at 0")


def _summary(families: dict[str, list[tuple[str, dict[str, str], float]]], name: str,
             model: str) -> dict[str, float]:
    """"count", "sum" and each quantile of one model's summary series."""
    return {labels.get("quantile", sample.rsplit("_", 1)[1]): value for sample, labels, value in families.get(name, [])
            if labels.get("model") == model}


def test_summaries_have_count_sum_and_tritons_quantiles(server: ServerProcess) -> None:
    for value in range(1, 6):
        assert _infer(server, "pysum", float(value)) == 2 * value
    text = scrape(server.metrics_url).text
    families = _families(server)
    counters = Samples(text)
    for name in SUMMARIES:
        assert f"# TYPE {name} summary\n" in text
        series = _summary(families, name, "pysum")
        assert set(series) == {"count", "sum", *QUANTILES}, name
        assert series["count"] == 5, name
        quantiles = [series[q] for q in sorted(QUANTILES, key=float)]
        assert all(not math.isnan(value) and value >= 0 for value in quantiles), (name, series)
        assert quantiles == sorted(quantiles), (name, series)
        # As Triton's documentation says: the _sum of a summary is its latency counter's value.
        counter = name.replace("_summary_us", "_duration_us")
        assert series["sum"] == counters.total(f"{counter}_total", model="pysum"), name
    assert _summary(families, "nv_inference_compute_infer_summary_us", "pysum")["0.999"] > 0
    # A version nobody asked has its summaries too, empty: count 0, every quantile NaN (Triton writes Nan).
    idle = _summary(families, "nv_inference_queue_summary_us", "pyidle")
    assert idle["count"] == 0 and all(math.isnan(idle[q]) for q in QUANTILES)
    assert 'quantile="0.5"' in text and 'version="1",quantile="0.5"}' in text  # quantile last, as Triton


def test_a_cached_version_has_tritons_cache_series(server: ServerProcess) -> None:
    assert [_infer(server, "pycached", 21.0) for _ in range(3)] == [42.0, 42.0, 42.0]  # a miss, then two hits
    page = scrape(server.metrics_url)
    cached = {"model": "pycached", "version": "1"}
    assert page.total("nv_cache_num_misses_per_model_total", **cached) == 1
    assert page.total("nv_cache_num_hits_per_model_total", **cached) == 2
    assert page.select("nv_cache_hit_duration_per_model_total", **cached)
    assert page.select("nv_cache_miss_duration_per_model_total", **cached)
    assert page.total("nv_inference_request_success_total", **cached) == 3  # hits are successes
    assert page.total("nv_inference_count_total", **cached) == 1  # ... but not inferences
    families = _families(server)
    assert _summary(families, "nv_cache_hit_summary_per_model", "pycached")["count"] == 2
    assert _summary(families, "nv_cache_miss_summary_per_model", "pycached")["count"] == 1
    assert _summary(families, "nv_inference_queue_summary_us", "pycached")["count"] == 3  # hits too, as Triton
    # As Triton: no request summary for a cached version; no cache series for a version without the cache.
    assert not _summary(families, "nv_inference_request_summary_us", "pycached")
    assert page.label_values("nv_cache_num_hits_per_model_total", "model") == {"pycached"}


def test_the_machine_gauges_are_tritons(server: ServerProcess) -> None:
    families = _families(server)
    for name in ("nv_cpu_utilization", "nv_cpu_memory_total_bytes", "nv_cpu_memory_used_bytes"):
        assert [(sample, labels) for sample, labels, _ in families[name]] == [(name, {})], name  # no labels
    text = scrape(server.metrics_url).text
    assert "# TYPE nv_cpu_utilization gauge\n" in text
    (_, _, utilization), = families["nv_cpu_utilization"]
    (_, _, total), = families["nv_cpu_memory_total_bytes"]
    (_, _, used), = families["nv_cpu_memory_used_bytes"]
    assert 0.0 <= utilization <= 1.0
    assert total == psutil.virtual_memory().total  # the same machine: MemTotal, in bytes
    assert 0 < used < total
    # GPUs as NVML sees them from here: none on a CPU machine (then no nv_gpu_* family, as Triton).
    gpus = _nvml_gpu_uuids()
    if not gpus:
        assert not [name for name in families if name.startswith(("nv_gpu_", "nv_energy"))]
    else:
        for name in ("nv_gpu_utilization", "nv_gpu_memory_total_bytes", "nv_gpu_memory_used_bytes"):
            assert {labels["gpu_uuid"] for _, labels, _ in families[name]} == gpus, name


def _nvml_gpu_uuids() -> set[str]:
    """The GPUs NVML lists on this machine (none without the package, a driver or a GPU)."""
    try:
        import pynvml
    except ImportError:
        return set()
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return set()
    try:
        found = set()
        for index in range(pynvml.nvmlDeviceGetCount()):
            uuid = pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(index))
            found.add(uuid.decode() if isinstance(uuid, bytes) else str(uuid))
        return found
    finally:
        pynvml.nvmlShutdown()


def test_two_workers_summaries_are_merged_on_one_page(tmp_path: Path) -> None:
    write_whoami_model(tmp_path / "models")
    server = ServerProcess(tmp_path / "models", tmp_path / "server.log", "--workers", "2", "--access-log", "off",
                           *_documented_flags())
    server.start()
    try:
        answered = answers_from_two_workers(server)

        def request_summary() -> dict[str, float]:
            return _summary(_families(server), "nv_inference_request_summary_us", "whoami")

        # Each worker writes its summaries within a second: wait for all of them on the page.
        wait_for(lambda: request_summary().get("count") == len(answered), "both workers' summaries on the page")
        summary = request_summary()
        counter = scrape(server.metrics_url).total("nv_inference_request_duration_us_total", model="whoami")
        assert summary["sum"] == counter  # the same microseconds, from two processes
        assert all(not math.isnan(summary[q]) for q in QUANTILES)
    finally:
        assert server.stop() == 0, server.log()
