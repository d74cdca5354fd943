"""The gRPC transport: Open Inference Protocol, the simple ModelService, health and reflection.

The message modules in ``generated/`` are built from ``proto/*.proto`` by the project's
install step (hatch_build.py) and are not in git. Importing this package checks they are
there, and in a source checkout that they match the protos, so a clean clone that was
never installed fails here with the command that fixes it rather than deep in an import.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__: list[str] = []

_HERE = Path(__file__).resolve().parent
_FIX = "run `pip install -e .` (or scripts/install) in the servekit checkout to generate it"


def _proto_digest(proto_dir: Path) -> str:
    """The same digest hatch_build.py records: SHA-256 over the .proto files' names and bytes."""
    digest = hashlib.sha256()
    for path in sorted(proto_dir.glob("*.proto")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _check_generated() -> None:
    marker = _HERE / "generated" / "__init__.py"
    if not marker.is_file():
        raise ImportError(f"servekit's generated gRPC code is missing ({_HERE / 'generated'}): {_FIX}")
    checkout = _HERE.parents[2]  # src/servekit/grpc -> the repository root, in a source checkout
    proto_dir = checkout / "proto"
    if not ((checkout / "hatch_build.py").is_file() and proto_dir.is_dir()):
        return  # an installed wheel: its generated code was built with it
    recorded = marker.read_text(encoding="utf-8").partition('PROTO_SHA256 = "')[2][:64]
    if recorded != _proto_digest(proto_dir):
        raise ImportError(f"servekit's generated gRPC code is older than {proto_dir}/*.proto: {_FIX}")


_check_generated()
