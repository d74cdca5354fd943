"""The repository extension's gate: token (the management API's), open, or off."""

from __future__ import annotations

import pytest

from servekit.errors import PermissionDenied, Unauthenticated
from servekit.serving.control import RepositoryControl

TOKEN = "0123456789abcdef-token"


def test_token_mode_asks_for_the_management_token() -> None:
    control = RepositoryControl("token")
    with pytest.raises(PermissionDenied, match="runs no management API; use the management API, or start with "
                                               "--repository-control open"):
        control.check(f"Bearer {TOKEN}")  # no management API: no token to compare with
    control.use_token(TOKEN)
    control.check(f"Bearer {TOKEN}")
    control.check(f"bearer  {TOKEN} ")
    with pytest.raises(Unauthenticated) as missing:
        control.check(None)
    assert missing.value.headers() == {"WWW-Authenticate": "Bearer"} and missing.value.http_status == 401
    with pytest.raises(Unauthenticated):
        control.check(f"Basic {TOKEN}")
    with pytest.raises(PermissionDenied, match="wrong management token"):
        control.check(f"Bearer {TOKEN}x")


def test_a_management_api_without_authentication_opens_it_and_the_other_modes_say_what_they_are() -> None:
    without_auth = RepositoryControl("token")
    without_auth.use_token(None)
    without_auth.check(None)
    RepositoryControl("open").check(None)
    with pytest.raises(PermissionDenied, match=r"off on this server \(--repository-control off\)"):
        RepositoryControl("off").check(f"Bearer {TOKEN}")
