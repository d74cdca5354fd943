"""Whether the gRPC server can run here: it needs the grpc extra (grpcio and its health and
reflection services), which a core install leaves out. The message code needs protobuf alone.
Imports nothing of grpc: callers ask before they import ``servekit.grpc.server``."""

from __future__ import annotations

import importlib.util

__all__ = ["GRPC_HINT", "grpc_installed"]

GRPC_HINT = "pip install 'servekit[grpc]'"
_MODULES = ("grpc", "grpc_health", "grpc_reflection")


def grpc_installed() -> bool:
    """True when grpcio, grpcio-health-checking and grpcio-reflection can all be imported."""
    return all(importlib.util.find_spec(name) is not None for name in _MODULES)
