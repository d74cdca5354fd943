"""The ``servekit`` command."""

from servekit.cli.main import main

__all__ = ["main"]
