"""``servekit ray deploy`` argument handling, before any cluster is contacted."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from servekit.cli.main import main
from tests.builders import write_repository


def test_ray_deploy_is_listed_with_its_options() -> None:
    result = CliRunner().invoke(main, ["ray", "deploy", "--help"])
    assert result.exit_code == 0
    for option in ("--address", "--http-host", "--http-port", "--route-prefix", "--model"):
        assert option in result.output


def test_unknown_model_is_refused_before_connecting(tmp_path: Path) -> None:
    repository = write_repository(tmp_path / "models", {"linear": None})
    result = CliRunner().invoke(main, ["ray", "deploy", str(repository), "--model", "absent"])
    assert result.exit_code != 0
    assert "absent" in result.output
