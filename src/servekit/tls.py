"""TLS on every port from one set of files: ``--tls-cert``/``--tls-key`` serve HTTPS and gRPC over
TLS on the inference, gRPC, metrics and management ports; ``--tls-ca`` adds mutual TLS (every
port then asks clients for a certificate that CA signed). Each server takes its arguments from
here, so no port is left plain by accident.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from servekit.config import ServerSettings

__all__ = ["grpc_credentials", "tls_files", "uvicorn_tls"]


def tls_files(settings: ServerSettings) -> tuple[Path, Path, Path | None] | None:
    """(certificate, key, CA or None) when the ports serve TLS, else None."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    return settings.tls_cert, settings.tls_key, settings.tls_ca


def uvicorn_tls(settings: ServerSettings) -> dict[str, Any]:
    """uvicorn's TLS arguments for ``settings`` (none without TLS; client certificates required with a CA)."""
    files = tls_files(settings)
    if files is None:
        return {}
    cert, key, ca = files
    return {"ssl_certfile": str(cert), "ssl_keyfile": str(key), "ssl_ca_certs": None if ca is None else str(ca),
            "ssl_cert_reqs": ssl.CERT_NONE if ca is None else ssl.CERT_REQUIRED}


def grpc_credentials(settings: ServerSettings) -> Any | None:
    """grpc's server credentials for ``settings``, or None to serve without TLS (reads the files)."""
    files = tls_files(settings)
    if files is None:
        return None
    import grpc  # only a server that serves gRPC imports grpc

    cert, key, ca = files
    return grpc.ssl_server_credentials(
        [(key.read_bytes(), cert.read_bytes())],
        root_certificates=None if ca is None else ca.read_bytes(),
        require_client_auth=ca is not None,
    )
