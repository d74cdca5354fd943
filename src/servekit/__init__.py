"""servekit: one model server for every serving pattern, chosen per model."""

from servekit.handler import BaseHandler, HandlerContext

__version__ = "0.1.0"

__all__ = ["BaseHandler", "HandlerContext", "__version__"]
