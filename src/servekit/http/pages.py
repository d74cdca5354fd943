"""The pages a browser opens, every byte of them served by this server (no CDN: they work offline
and behind firewalls).

- ``GET /``: the status page, static HTML, CSS and JS shipped in the package
  (``servekit/http/static/``, served under ``/assets/status/``). Its script polls
  ``GET /status.json`` every 2 s and draws every model version: state, live requests and
  failures per second, p50/p99 latency, mean batch size, queue depth.
- ``GET /status.json``: the data plane's snapshot (``DataPlane.status``) with what the page
  links to: the metrics port (None when metrics are off), the docs site (``docs_site_url``).
- ``GET /docs`` and ``GET /redoc``: FastAPI's Swagger UI and ReDoc pages, pointed at the
  copies of their scripts that the ``fastapi-offline`` package ships (served under
  ``/assets/docs/``) instead of FastAPI's default CDN, and without web fonts.

With several workers each answers from its own models and figures (``server.pid`` and
``server.workers`` in the document say so).
"""

from __future__ import annotations

import os
from importlib import resources
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from starlette.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles

from servekit import __version__
from servekit.config import ServerSettings
from servekit.serving.dataplane import DataPlane

__all__ = ["add_pages"]

STATUS_ASSETS = "/assets/status"
DOCS_ASSETS = "/assets/docs"

router = APIRouter()


def add_pages(app: FastAPI) -> None:
    """Serve the status page, its JSON and the offline API docs on ``app`` (made with
    ``docs_url=None, redoc_url=None``: FastAPI's own pages load their scripts from a CDN)."""
    app.include_router(router)
    app.mount(STATUS_ASSETS, StaticFiles(packages=[("servekit.http", "static")]), name="status-assets")
    app.mount(DOCS_ASSETS, StaticFiles(packages=[("fastapi_offline", "static")]), name="docs-assets")


_INDEX = resources.files("servekit.http").joinpath("static", "index.html")


@router.get("/", include_in_schema=False)
async def status_page() -> Response:
    return HTMLResponse(_INDEX.read_bytes())


@router.get("/status.json", tags=["status"], summary="Every model version's state and live figures")
async def status_document(request: Request) -> dict[str, Any]:
    """What the status page shows: ``models`` (one row per model version: state, requests and failures
    per second, p50/p99 latency in ms and mean batch size over the last ``window_s`` seconds, queue
    depth, totals), ``ready``, ``server`` and ``links``."""
    plane: DataPlane = request.app.state.dataplane
    settings: ServerSettings = request.app.state.settings
    document = plane.status()
    document["server"] = {"name": "servekit", "version": __version__, "pid": os.getpid(),
                          "workers": settings.workers}
    document["links"] = {
        "docs": "docs",
        "redoc": "redoc",
        "openapi": request.app.openapi_url.lstrip("/") if request.app.openapi_url else None,
        "metrics_port": settings.metrics_port or None,
        "metrics_scheme": settings.scheme,
        "docs_site": settings.docs_site_url,
    }
    return document


def _root(request: Request) -> str:
    """The prefix a proxy serves this app under (uvicorn's --root-path), or ""."""
    root: str = request.scope.get("root_path", "")
    return root


def _assets(request: Request) -> str:
    return _root(request) + DOCS_ASSETS


@router.get("/docs", include_in_schema=False)
async def swagger_ui(request: Request) -> HTMLResponse:
    app: FastAPI = request.app
    return get_swagger_ui_html(
        openapi_url=_root(request) + str(app.openapi_url),
        title=f"{app.title} - Swagger UI",
        swagger_js_url=f"{_assets(request)}/swagger-ui-bundle.js",
        swagger_css_url=f"{_assets(request)}/swagger-ui.css",
        swagger_favicon_url=f"{_assets(request)}/favicon.png",
        # Swagger UI would otherwise ask validator.swagger.io to check the document.
        swagger_ui_parameters={"validatorUrl": None},
    )


@router.get("/redoc", include_in_schema=False)
async def redoc(request: Request) -> HTMLResponse:
    app: FastAPI = request.app
    return get_redoc_html(
        openapi_url=_root(request) + str(app.openapi_url),
        title=f"{app.title} - ReDoc",
        redoc_js_url=f"{_assets(request)}/redoc.standalone.js",
        redoc_favicon_url=f"{_assets(request)}/favicon.png",
        with_google_fonts=False,
    )
