"""A short description of the machine and libraries, stored with every measurement."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from typing import Any

__all__ = ["describe_environment"]

_LIBRARIES = ("servekit", "numpy", "onnxruntime", "torch", "scikit-learn", "grpcio")


def describe_environment() -> dict[str, Any]:
    versions = {}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "libraries": versions,
    }
