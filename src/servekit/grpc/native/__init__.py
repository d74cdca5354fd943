"""The native gRPC front end: HTTP/2 by nghttp2 (a C extension), calls on servekit's event loop.

``available()`` says whether the extension was built at install (it needs libnghttp2's headers);
``server.NativeGrpcServer`` is the server, chosen with ``--grpc-frontend native``.
"""

from __future__ import annotations

import importlib.util

__all__ = ["NATIVE_HINT", "available"]

NATIVE_HINT = ("the native gRPC front end is not built in this installation: install libnghttp2's headers "
               "(Debian/Ubuntu: apt-get install libnghttp2-dev) and reinstall servekit, or use --grpc-frontend grpcio")


def available() -> bool:
    """True when the C extension ``servekit.grpc.native._h2`` is installed."""
    return importlib.util.find_spec("servekit.grpc.native._h2") is not None
