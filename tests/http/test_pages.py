"""The status page, its JSON and the offline API docs, in process (the browser test is
tests/e2e/test_status_page.py)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from servekit.config import ServerSettings
from servekit.http import create_app
from tests.builders import write_repository

URL = re.compile(r"""https?://[^\s"'<>)]+""")
ASSET = re.compile(r"""(?:src|href)=["']([^"']+)["']""")
BODY = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 4], "data": [[1, 0, 0, 2], [0, 1, 1, 0]]}]}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    root: Path = tmp_path_factory.mktemp("repo")
    write_repository(root, {"m": "max_batch_size: 4\n", "broken": "instances: many\n"})
    settings = ServerSettings(repository=root, metrics_port=9123, grpc_port=0, management_port=0)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def assets_of(html: str) -> list[str]:
    return [url for url in ASSET.findall(html) if not url.startswith("#")]


def test_the_status_page_and_its_assets_come_from_this_server(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assets = assets_of(page.text)
    assert "assets/status/status.js" in assets and "assets/status/status.css" in assets
    assert URL.findall(page.text) == []
    for asset in ("assets/status/status.js", "assets/status/status.css"):
        served = client.get(f"/{asset}")
        assert served.status_code == 200, asset
        assert URL.findall(served.text) == [], asset  # the script builds the metrics link from location
    assert "status.json" in client.get("/assets/status/status.js").text


def test_status_json_shows_every_version_with_live_figures(client: TestClient) -> None:
    for _ in range(5):
        assert client.post("/v2/models/m/infer", json=BODY).status_code == 200
    wrong = {"inputs": [{**BODY["inputs"][0], "name": "z"}]}
    assert client.post("/v2/models/m/infer", json=wrong).status_code == 400  # fails on m: counted as a failure
    document = client.get("/status.json").json()
    assert document["ready"] is True and document["window_s"] == 10.0
    assert document["server"]["workers"] == 1 and document["server"]["pid"] > 0
    assert document["links"]["metrics_port"] == 9123 and document["links"]["metrics_scheme"] == "http"
    assert document["links"]["docs"] == "docs" and document["links"]["docs_site"] is None
    rows = {row["model"]: row for row in document["models"]}
    assert set(rows) == {"m", "broken"}
    broken = rows["broken"]
    assert broken["state"] == "UNAVAILABLE" and "instances" in broken["reason"]
    assert "requests_per_s" not in broken  # never loaded: no figures
    m = rows["m"]
    assert (m["version"], m["state"], m["default"], m["traffic_percent"]) == ("1", "READY", True, None)
    assert m["requests_total"] == 6 and m["failures_total"] == 1
    assert m["requests_per_s"] > 0 and 0 < m["failures_per_s"] < m["requests_per_s"]
    assert 0 < m["p50_ms"] <= m["p99_ms"]
    assert m["batches_per_s"] > 0 and 1 <= m["mean_batch_size"] <= 4 and m["max_batch_size"] == 4
    assert m["queue_depth"] == 0 and m["instances"] == 1 and m["busy_instances"] == 0
    assert m["runtime"] == "onnx" and m["device"] == "cpu"


def test_status_json_is_documented_in_openapi(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "/status.json" in paths
    assert "/" not in paths and "/docs" not in paths


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_api_docs_load_their_scripts_from_this_server(client: TestClient, page: str) -> None:
    response = client.get(page)
    assert response.status_code == 200
    html = response.text
    assert URL.findall(html) == [], "an absolute URL: a CDN, or fonts from another host"
    assets = assets_of(html)
    assert assets and all(url.startswith("/assets/docs/") for url in assets), assets
    for url in assets:
        assert client.get(url).status_code == 200, url
    assert "/openapi.json" in html


def test_links_say_when_metrics_are_off_and_where_the_docs_site_is(tmp_path: Path) -> None:
    settings = ServerSettings(repository=tmp_path, metrics_port=0, grpc_port=0, management_port=0,
                              docs_site_url="https://docs.example.org/servekit/")
    with TestClient(create_app(settings)) as client:
        document = client.get("/status.json").json()
    assert document["models"] == []
    assert document["links"]["metrics_port"] is None
    assert document["links"]["docs_site"] == "https://docs.example.org/servekit/"


@pytest.mark.parametrize("url", ["javascript:alert(1)", "docs.example.org", "data:text/html,x"])
def test_the_docs_site_url_must_be_a_web_link(url: str) -> None:
    with pytest.raises(ValueError, match="docs site URL"):
        ServerSettings(docs_site_url=url)
