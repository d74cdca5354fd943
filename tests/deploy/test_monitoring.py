"""deploy/compose.yaml, deploy/prometheus and deploy/grafana against a live server and a real Prometheus.

Prometheus runs on a copy of the repository's scrape config whose target is moved to a live
``servekit serve`` on loopback; every query of the Grafana dashboard runs in it, and every
servekit metric the dashboard names must be one the server exports.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.harness import HOST, ServerProcess, free_port
from tests.e2e.repos import write_onnx_model

from .conftest import DEPLOY
from .prometheus_process import PrometheusProcess, executable_or_skip

DASHBOARD = DEPLOY / "grafana" / "dashboards" / "servekit.json"
SCRAPE_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
METRIC_NAME = re.compile(r"\bservekit_[a-z_]+\b")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def dashboard_queries() -> list[str]:
    """Every PromQL expression of the dashboard: panel targets and template variable queries."""
    dashboard = _dashboard()
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            queries.append(variable["query"]["query"])
    return queries


def _runnable(expr: str) -> str:
    """Grafana's variables replaced as Grafana would for "All" models and a 1-minute rate window."""
    return expr.replace("$__rate_interval", "1m").replace("$model", ".*")


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """onnx_linear with the response cache on, in a Redis that is down (as when compose's redis dies: every
    lookup is a counted cache error and a miss), after two good requests and an invalid one."""
    folder = tmp_path_factory.mktemp("monitoring")
    model = write_onnx_model(folder / "models")
    config = _yaml(model / "config.yaml") or {}
    config["cache"] = {"enabled": True}
    (model / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    nobody_listens = f"redis://{HOST}:{free_port()}/0"
    server = ServerProcess(folder / "models", folder / "server.log", "--cache-url", nobody_listens).start()
    try:
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [0.1, 0.2, 0.3, 0.4]}]}
        with httpx.Client(base_url=server.base_url, timeout=10) as client:
            for _ in range(2):
                assert client.post("/v2/models/onnx_linear/infer", json=body).status_code == 200
            assert client.post("/v2/models/onnx_linear/infer", json={"inputs": []}).status_code == 400
        yield server
    finally:
        server.stop()


def _scraping(server: ServerProcess, folder: Path) -> PrometheusProcess:
    """A Prometheus on the repository's scrape config, its servekit target moved to ``server``, every second."""
    config = _yaml(SCRAPE_CONFIG)
    config["global"]["scrape_interval"] = "1s"
    [job] = [job for job in config["scrape_configs"] if job["job_name"] == "servekit"]
    job["scrape_interval"] = "1s"
    target = server.metrics_url.removeprefix("http://").removesuffix("/metrics")
    job["static_configs"][0]["targets"] = [target]
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return PrometheusProcess(folder / "prometheus.yml", folder).start()


@pytest.fixture(scope="module")
def prometheus(live_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusProcess]:
    process = _scraping(live_server, tmp_path_factory.mktemp("prometheus"))
    try:
        yield process
    finally:
        process.stop()


def test_every_dashboard_query_has_a_series_for_each_model_right_after_start(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """No "No data" panels: a server that has answered nothing yet (two models, one with its cache on) already
    has every series the dashboard reads, so each query returns a series, per model where it groups by model."""
    folder = tmp_path_factory.mktemp("fresh")
    write_onnx_model(folder / "models")
    cached = write_onnx_model(folder / "models", name="cached_linear")
    config = {**(_yaml(cached / "config.yaml") or {}), "cache": {"enabled": True}}
    (cached / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    server = ServerProcess(folder / "models", folder / "server.log").start()
    try:
        process = _scraping(server, folder)
        try:
            queries = [expr for expr in dashboard_queries() if not expr.startswith("label_values(")]
            empty = queries
            deadline = time.monotonic() + 30  # rate() needs two scrapes in its window
            while empty and time.monotonic() < deadline:
                time.sleep(0.5)
                empty = [expr for expr in empty if not _has_every_model(process, expr)]
            assert empty == [], f"no series right after start (before any request) for: {empty}"
            [names] = [expr for expr in dashboard_queries() if expr.startswith("label_values(")]
            series = process.query(names.removeprefix("label_values(").split(",")[0])["result"]
            assert {entry["metric"]["model"] for entry in series} == {"onnx_linear", "cached_linear"}
        finally:
            process.stop()
    finally:
        server.stop()


def _has_every_model(prometheus: PrometheusProcess, expr: str) -> bool:
    result = prometheus.query(_runnable(expr))["result"]
    if "(model" not in expr and ", model" not in expr:
        return bool(result)
    return {series["metric"].get("model") for series in result} >= {"onnx_linear", "cached_linear"}


def test_scrape_config_passes_promtool() -> None:
    result = subprocess.run([executable_or_skip("promtool"), "check", "config", str(SCRAPE_CONFIG)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_scrapes_a_live_server(prometheus: PrometheusProcess) -> None:
    deadline = time.monotonic() + 30
    while True:
        result = prometheus.query('servekit_requests_total{job="servekit", model="onnx_linear", protocol="http"}'
                                  )["result"]
        if result:
            break
        assert time.monotonic() < deadline, f"no servekit series after 30 s:\n{prometheus.log()[-3000:]}"
        time.sleep(0.25)
    outcomes = {series["metric"]["outcome"]: float(series["value"][1]) for series in result}
    assert outcomes["success"] == 2
    [misses] = prometheus.query('sum(servekit_cache_misses_total{model="onnx_linear"})')["result"]
    assert misses["value"][1] == "2"
    [errors] = prometheus.query("sum(servekit_cache_errors_total)")["result"]
    assert float(errors["value"][1]) >= 1
    assert prometheus.query('up{job="servekit"}')["result"][0]["value"][1] == "1"


def test_every_dashboard_query_runs_in_prometheus(prometheus: PrometheusProcess) -> None:
    queries = [expr for expr in dashboard_queries()
               if not expr.startswith("label_values(")]  # a Grafana function, not PromQL: its metric is checked below
    assert len(queries) >= 10, queries
    for expr in queries:
        prometheus.query(_runnable(expr))  # fails the test on a PromQL error


def _exported_names(text: str) -> set[str]:
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        if family.type == "histogram":
            names.update(family.name + suffix for suffix in HISTOGRAM_SUFFIXES)
        if family.type == "counter":
            names.add(family.name + "_total")
    return names


def test_dashboard_names_only_metrics_the_server_exports(live_server: ServerProcess) -> None:
    exported = _exported_names(httpx.get(live_server.metrics_url, timeout=10).text)
    named = {name for expr in dashboard_queries() for name in METRIC_NAME.findall(expr)}
    assert len(named) >= 10
    assert named <= exported, f"not exported by servekit: {sorted(named - exported)}"


def test_dashboard_covers_what_operators_look_at() -> None:
    named = {name for expr in dashboard_queries() for name in METRIC_NAME.findall(expr)}
    for needed in ("servekit_requests_total", "servekit_request_duration_seconds_bucket",
                   "servekit_queue_duration_seconds_bucket", "servekit_batch_size_sum", "servekit_cache_hits_total",
                   "servekit_cache_misses_total"):
        assert needed in named
    for panel in _dashboard()["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            assert 'model=~"$model"' in expr or "servekit_cache_errors_total" in expr, panel["title"]


def test_compose_wires_servekit_redis_prometheus_and_grafana() -> None:
    compose = _yaml(DEPLOY / "compose.yaml")
    services = compose["services"]
    assert set(services) == {"servekit", "demo", "redis", "prometheus", "grafana", "servekit-gpu",
                             "servekit-scaled", "proxy"}
    servekit = services["servekit"]
    assert servekit["build"]["dockerfile"] == "deploy/Dockerfile"
    assert (DEPLOY / servekit["build"]["context"] / servekit["build"]["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    assert servekit["environment"]["SERVEKIT_CACHE_URL"].startswith("redis://redis:6379/")
    assert any(volume.endswith(":/models") for volume in servekit["volumes"])
    # Prometheus scrapes the servekit service on its metrics port (the image's SERVEKIT_METRICS_PORT).
    [job] = [job for job in _yaml(SCRAPE_CONFIG)["scrape_configs"] if job["job_name"] == "servekit"]
    assert job["static_configs"][0]["targets"] == ["servekit:8002"]
    assert "./prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in services["prometheus"]["volumes"]
    # Grafana: provisioning and dashboards mounted where the provider looks; one datasource uid everywhere.
    mounts = dict(volume.split(":")[:2] for volume in services["grafana"]["volumes"])
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    [provider] = _yaml(DEPLOY / "grafana/provisioning/dashboards/servekit.yaml")["providers"]
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    [datasource] = _yaml(DEPLOY / "grafana/provisioning/datasources/prometheus.yaml")["datasources"]
    assert datasource["url"] == "http://prometheus:9090" and datasource["type"] == "prometheus"
    for panel in _dashboard()["panels"]:
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == datasource["uid"], panel["title"]
    for source in (volume.split(":")[0] for service in services.values() for volume in service.get("volumes", [])):
        if source.startswith("./"):
            assert (DEPLOY / source).exists(), source
