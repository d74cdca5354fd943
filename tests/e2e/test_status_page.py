"""The status page (GET /) and the API docs (GET /docs) in a real headless Chromium, against a real
server on the demo repository under load.

Chromium runs with every host but 127.0.0.1 unresolvable and a network log: the pages must draw
with nothing from a CDN, and the log must show no request to any other host. The screenshot goes
to test-output/status-page.png (git-ignored), for a person to look at.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest

from servekit.demo import write_demo_repository
from tests.conftest import require_executable

from .harness import HOST, ServerProcess

OUTPUT = Path(__file__).resolve().parents[2] / "test-output"
CHROMIUM_TIMEOUT_S = 120
DOCS_SITE = "https://docs.example.org/servekit/"  # a link only: the page must not load it


@pytest.fixture(scope="module")
def chromium() -> str:
    return require_executable("chromium", "apt-get install -y chromium")


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("demo")
    write_demo_repository(root)
    server = ServerProcess(root, tmp_path_factory.mktemp("logs") / "demo.log", "--docs-site-url", DOCS_SITE)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture()
def load(demo_server: ServerProcess) -> Iterator[list[tuple[str, str]]]:
    """Requests to every loaded model version, sent one after another from a thread for as long as
    the test runs; yields the (model, version) pairs it sends to, once each has answered."""
    with httpx.Client(base_url=demo_server.base_url, timeout=30) as client:
        rows = client.get("/status.json").json()["models"]
    targets = [(row["model"], row["version"]) for row in rows if row["state"] == "READY"]
    pixels = np.random.default_rng(0).integers(0, 16, (2, 64)).astype(np.float32).tolist()
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 64], "data": pixels}]}
    answered = {target: threading.Event() for target in targets}
    stop = threading.Event()
    failures: list[str] = []

    def send() -> None:
        with httpx.Client(base_url=demo_server.base_url, timeout=30) as client:
            while not stop.is_set():
                for model, version in targets:
                    response = client.post(f"/v2/models/{model}/versions/{version}/infer", json=body)
                    if response.status_code != 200:
                        failures.append(f"{model}/{version}: {response.status_code} {response.text}")
                    answered[model, version].set()

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        for event in answered.values():
            assert event.wait(60), "the load never got an answer"
        yield targets
    finally:
        stop.set()
        sender.join(60)
    assert not failures, failures[:3]


def run_chromium(chromium: str, url: str, profile: Path, *extra: str) -> str:
    """Chromium headless on ``url`` with only 127.0.0.1 reachable; returns its stdout."""
    command = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
        "--no-default-browser-check", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--disable-extensions", f"--user-data-dir={profile}",
        f"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE {HOST}",
        "--virtual-time-budget=6000", "--window-size=1400,900", *extra, url,
    ]
    done = subprocess.run(command, capture_output=True, timeout=CHROMIUM_TIMEOUT_S, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    return done.stdout.decode()


def page_requests(net_log: Path) -> set[str]:
    """Every URL the page asked for, from Chromium's NetLog (--log-net-log): the requests started
    on behalf of a page of this server's site (its network isolation key); the browser's own
    background requests (update checks, ...) have another key and are left out."""
    log = json.loads(net_log.read_text())
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    site = f"http://{HOST}"
    started = [event["params"] for event in log["events"] if event["type"] == start_job and "params" in event]
    return {params["url"] for params in started if params.get("network_isolation_key", "").startswith(site)}


def assert_only_this_server(urls: set[str], port: int) -> None:
    assert urls, "the network log recorded no request of the page"
    elsewhere = {url for url in urls if urlsplit(url).netloc != f"{HOST}:{port}"}
    assert not elsewhere, f"the page asked other hosts: {sorted(elsewhere)[:5]}"


class Rows(HTMLParser):
    """The status table's rows (``tr`` with data-model): their data attributes, and their cells' text
    by class; and every element with an id: its tag, href and text."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, str]] = []
        self.by_id: dict[str, dict[str, str]] = {}
        self._cell: str | None = None
        self._id: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {name: value or "" for name, value in attrs}
        if tag == "tr" and "data-model" in found:
            self.rows.append({name: found[name] for name in ("data-model", "data-version", "data-state")})
        elif tag == "td" and self.rows:
            self._cell = next(name for name in found.get("class", "").split() if name != "number")
            self.rows[-1][self._cell] = ""
        if "id" in found:
            self._id = found["id"]
            self.by_id[self._id] = {"tag": tag, "href": found.get("href", ""), "text": ""}

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._cell = None
        self._id = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self.rows[-1][self._cell] += data
        if self._id is not None:
            self.by_id[self._id]["text"] += data


def test_status_page_in_chromium(chromium: str, demo_server: ServerProcess, load: list[tuple[str, str]],
                                 tmp_path: Path) -> None:
    net_log = tmp_path / "net.json"
    dom = run_chromium(chromium, f"{demo_server.base_url}/", tmp_path / "profile", "--dump-dom",
                       f"--log-net-log={net_log}")
    page = Rows()
    page.feed(dom)
    served = {(row["model"], row["version"]): row["state"]
              for row in httpx.get(f"{demo_server.base_url}/status.json").json()["models"]}
    shown = {(row["data-model"], row["data-version"]): row for row in page.rows}
    assert {key: row["data-state"] for key, row in shown.items()} == served, dom[-3000:]
    assert {"digits", "digits_sklearn", "digits_handler"} <= {model for model, _ in shown}
    for target in load:
        row = shown[target]
        assert row["data-state"] == "READY" and row["state"] == "READY"
        assert float(row["requests-per-s"]) > 0, row
        assert float(row["p50-ms"]) > 0 and float(row["p99-ms"]) >= float(row["p50-ms"]), row
        assert row["queue-depth"].isdigit() and row["runtime"], row
    assert page.by_id["server-state"]["text"] == "ready"
    assert page.by_id["link-docs"]["href"] == "docs"
    metrics = page.by_id["link-metrics"]
    assert (metrics["tag"], metrics["href"]) == ("a", f"http://{HOST}:{demo_server.metrics_port}/metrics")
    assert page.by_id["link-docs-site"]["href"] == DOCS_SITE
    assert_only_this_server(page_requests(net_log), demo_server.port)

    OUTPUT.mkdir(exist_ok=True)
    screenshot = OUTPUT / "status-page.png"
    screenshot.unlink(missing_ok=True)
    run_chromium(chromium, f"{demo_server.base_url}/", tmp_path / "profile-2", f"--screenshot={screenshot}")
    png = screenshot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(png[16:20], "big") == 1400


def test_api_docs_draw_offline_in_chromium(chromium: str, demo_server: ServerProcess, tmp_path: Path) -> None:
    net_log = tmp_path / "net.json"
    dom = run_chromium(chromium, f"{demo_server.base_url}/docs", tmp_path / "profile", "--dump-dom",
                       f"--log-net-log={net_log}")
    # Swagger UI drew the OpenAPI document: its operations are in the DOM.
    assert 'class="swagger-ui' in dom and "opblock" in dom, dom[-3000:]
    assert "/v2/models/{model}/infer" in dom
    assert_only_this_server(page_requests(net_log), demo_server.port)
