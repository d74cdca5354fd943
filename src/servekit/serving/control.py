"""Who may change what is served through the Open Inference Protocol's repository extension.

``POST /v2/repository/models/{m}/load|unload`` (and the gRPC RepositoryModelLoad/Unload) load and
unload models: they are management, not inference, so by default (``repository_control:
token``) they ask for the management API's bearer token (``Authorization: Bearer TOKEN``; gRPC
metadata ``authorization``), the same token and the same checks. Without a management API
(``--management-port 0``, or several workers) there is no token, and they are refused with a
message saying how to allow them; ``--no-management-auth`` opens them with the management API.
``open`` serves them to anyone (a trusted network), ``off`` refuses them always. The index
(``POST /v2/repository/index``) only reads, and stays open.
"""

from __future__ import annotations

import hmac
from typing import Literal

from servekit.errors import PermissionDenied, ServekitError, Unauthenticated

__all__ = ["ControlMode", "RepositoryControl", "bearer_error"]

ControlMode = Literal["token", "open", "off"]


def bearer_error(authorization: str | None, token: bytes) -> ServekitError | None:
    """None when ``authorization`` is ``Bearer <token>``; else 401 without a bearer token, 403 with a
    wrong one (compared in constant time)."""
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return Unauthenticated("this call needs the management token: send 'Authorization: Bearer TOKEN'")
    if not hmac.compare_digest(given.strip().encode("utf-8"), token):
        return PermissionDenied("wrong management token")
    return None


class RepositoryControl:
    """The repository extension's gate (see the module docstring)."""

    def __init__(self, mode: ControlMode = "token") -> None:
        self.mode = mode
        self._token: bytes | None = None
        self._settled = False  # the management API settled its token (None: it runs without one)

    def use_token(self, token: str | None) -> None:
        """The management API's token, once settled (None: the management API has no authentication)."""
        self._token = None if token is None else token.encode("utf-8")
        self._settled = True

    def check(self, authorization: str | None) -> None:
        """Raise unless a call with this ``Authorization`` value may load or unload models."""
        if self.mode == "open":
            return
        if self.mode == "off":
            raise PermissionDenied("loading and unloading through the repository extension is off on this server "
                                   "(--repository-control off)")
        if not self._settled:
            raise PermissionDenied("loading and unloading through the repository extension need the management "
                                   "token, and this server runs no management API; use the management API, or "
                                   "start with --repository-control open on a trusted network")
        if self._token is not None and (error := bearer_error(authorization, self._token)) is not None:
            raise error
