"""servekit: one model server for every serving pattern, chosen per model."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from servekit.handler import BaseHandler, HandlerContext

if TYPE_CHECKING:
    from servekit.embedded import serve

__version__ = "0.1.0"

__all__ = ["BaseHandler", "HandlerContext", "__version__", "serve"]


def __getattr__(name: str) -> Any:
    # servekit.serve brings in the server (uvicorn, FastAPI): only for those who call it, never for
    # a handler's `from servekit import BaseHandler`.
    if name == "serve":
        from servekit.embedded import serve

        return serve
    raise AttributeError(f"module 'servekit' has no attribute {name!r}")
