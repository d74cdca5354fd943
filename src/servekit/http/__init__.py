"""The HTTP transport: Open Inference Protocol REST and the simple JSON API."""

from servekit.http.app import create_app

__all__ = ["create_app"]
