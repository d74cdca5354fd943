"""The metrics server: Prometheus text format on its own port, one per ``servekit serve``.

``serve`` calls ``use_multiprocess_dir`` before anything imports prometheus-client, so the
serving process and every uvicorn worker it forks write their values to files in one
folder; ``MetricsServer`` runs in that same ``serve`` process (a thread), and at each
scrape adds the files up (``MultiProcessCollector``). One arrangement serves both cases:
with one worker, uvicorn serves in the ``serve`` process itself; with ``--workers N`` the
``serve`` process is uvicorn's supervisor and the workers are its children. A worker that
died leaves its counters (they must never go backwards) but not its live gauges.

Process metrics (``process_*``, as prometheus-client names them) are read from /proc for
the ``serve`` process and each of its children, one series per process (label ``pid``).

With ``--triton-metrics`` the page also carries Triton's ``nv_inference_*`` series, written
as Triton writes them (``servekit.observability.triton_metrics.render``) after servekit's own,
then Triton's machine-wide ``nv_cpu_*`` and ``nv_gpu_*`` gauges (``triton_system``);
the page is then always Prometheus's text format 0.0.4, as Triton's is: OpenMetrics would
rename those counters ``..._total``, which Triton dashboards do not query.

This module imports prometheus-client only inside functions: importing it fixes, once per
process, whether values go to memory or to files.
"""

from __future__ import annotations

import glob
import gzip
import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from prometheus_client.metrics_core import Metric

    WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

__all__ = ["MULTIPROC_ENV", "MetricsServer", "use_multiprocess_dir"]

log = logging.getLogger("servekit.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_LIVE_GAUGE_FILE = re.compile(r"gauge_live\w+?_(\d+)\.db$")


def use_multiprocess_dir() -> tuple[Path, bool]:
    """Point ``PROMETHEUS_MULTIPROC_DIR`` at an empty folder; returns it and whether it is ours to delete.

    A folder the user already named is kept but emptied of old value files (stale counters of a
    previous run would otherwise be added to this one's); otherwise a fresh temporary folder.
    """
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        folder = Path(given)
        folder.mkdir(parents=True, exist_ok=True)
        for old in [*folder.glob("*.db"), *folder.glob("triton_summaries_*.json")]:
            old.unlink()
        return folder, False
    folder = Path(tempfile.mkdtemp(prefix="servekit-metrics-"))
    os.environ[MULTIPROC_ENV] = str(folder)
    return folder, True


def _children(pid: int) -> list[int]:
    """Live child processes of ``pid`` (Linux /proc; empty elsewhere)."""
    found: list[int] = []
    for path in glob.glob(f"/proc/{pid}/task/*/children"):
        try:
            found.extend(int(child) for child in Path(path).read_text().split())
        except (OSError, ValueError):
            continue
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _ServerProcesses:
    """``process_*`` metrics of the serving process and its children, labelled by ``pid``."""

    def __init__(self, root_pid: int) -> None:
        self._root = root_pid

    def collect(self) -> Iterable[Metric]:
        from prometheus_client import ProcessCollector
        from prometheus_client.metrics_core import Metric

        merged: dict[str, Metric] = {}
        for pid in [self._root, *_children(self._root)]:
            collector = ProcessCollector(pid=lambda pid=pid: pid, registry=None)  # type: ignore[misc]
            for family in collector.collect():
                into = merged.get(family.name)
                if into is None:
                    into = merged[family.name] = Metric(family.name, family.documentation, family.type)
                for sample in family.samples:
                    into.add_sample(sample.name, {**sample.labels, "pid": str(pid)}, sample.value)
        return list(merged.values())


class _LiveWorkerFiles:
    """MultiProcessCollector, after dropping the live-gauge files of processes that are gone."""

    def __init__(self, folder: Path) -> None:
        from prometheus_client.multiprocess import MultiProcessCollector

        self.folder = folder
        self._collector = MultiProcessCollector(None, path=str(folder))  # type: ignore[no-untyped-call]

    def collect(self) -> Iterable[Metric]:
        from prometheus_client.multiprocess import mark_process_dead

        for path in self.folder.glob("gauge_live*.db"):
            match = _LIVE_GAUGE_FILE.search(path.name)
            if match and not _alive(int(match.group(1))):
                mark_process_dead(int(match.group(1)), str(self.folder))  # type: ignore[no-untyped-call]
        return self._collector.collect()  # type: ignore[no-any-return,no-untyped-call]


class _Without:
    """A collector's families, less those ``drop`` names (they are written another way)."""

    def __init__(self, collector: _LiveWorkerFiles, drop: Callable[[str], bool]) -> None:
        self._collector = collector
        self._drop = drop

    def collect(self) -> Iterable[Metric]:
        return [family for family in self._collector.collect() if not self._drop(family.name)]


def _with_triton_names(registry: Any, files: _LiveWorkerFiles, plain: WSGIApp) -> WSGIApp:
    """The metrics page with Triton's families after servekit's (see the module docstring); anything
    but a GET of the page (OPTIONS, other methods, /favicon.ico) is answered by ``plain``."""
    from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
    from prometheus_client.exposition import gzip_accepted

    from servekit.observability import triton_metrics
    from servekit.observability.triton_system import SystemGauges

    system = SystemGauges()
    triton_metrics.serve_page_here()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "GET" or environ.get("PATH_INFO") == "/favicon.ico":
            return plain(environ, start_response)
        body = (generate_latest(registry) + triton_metrics.render(files.collect(), files.folder)
                + ("\n".join(system.lines()) + "\n").encode())
        headers = [("Content-Type", CONTENT_TYPE_PLAIN_0_0_4)]
        if gzip_accepted(environ.get("HTTP_ACCEPT_ENCODING", "")):
            body = gzip.compress(body)
            headers.append(("Content-Encoding", "gzip"))
        start_response("200 OK", headers)
        return [body]

    return app


class MetricsServer:
    """Serves ``/metrics`` (any path, as prometheus-client does) on ``host:port`` from a daemon thread."""

    def __init__(self, folder: Path, remove_folder: bool) -> None:
        self.folder = folder
        self._remove_folder = remove_folder
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    def start(self, host: str, port: int, tls: tuple[Path, Path, Path | None] | None = None, *,
              triton: bool = False) -> int:
        """Bind and serve; returns the bound port. OSError when it cannot bind. ``tls``: (certificate,
        key, CA or None): serve HTTPS, asking clients for a certificate the CA signed when one is given.
        ``triton``: the page also carries Triton's metric names (``--triton-metrics``)."""
        from prometheus_client import CollectorRegistry, start_http_server

        from servekit.observability.triton_metrics import is_triton_family

        files = _LiveWorkerFiles(self.folder)
        registry = CollectorRegistry(auto_describe=False)
        # Triton's counters are never written by prometheus-client's own page (it would add _total).
        registry.register(_Without(files, is_triton_family))
        registry.register(_ServerProcesses(os.getpid()))
        if tls is None:
            self._server, self._thread = start_http_server(port, addr=host.strip("[]"), registry=registry)
        else:
            cert, key, ca = tls
            self._server, self._thread = start_http_server(
                port, addr=host.strip("[]"), registry=registry, certfile=str(cert), keyfile=str(key),
                client_cafile=None if ca is None else str(ca), client_auth_required=ca is not None,
            )
        plain = self._server.get_app()
        if triton and plain is not None:  # swapped in before the caller learns the port or announces the server
            self._server.set_app(_with_triton_names(registry, files, plain))
        self.port = self._server.server_port
        return self.port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._remove_folder:
            shutil.rmtree(self.folder, ignore_errors=True)
