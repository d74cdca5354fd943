"""servekit's wheel, as a new user gets it: built from the sources, installed into a fresh venv
(offline, from the wheelhouse scripts/install test builds), then serving over loopback.

The core must not require onnxruntime (a GPU user's onnxruntime-gpu is the same package) nor
grpcio: without extras it serves handlers over HTTP, an ONNX model is refused per model with the
extra to install, and gRPC is off with the extra named. Then the README's `pip install
"servekit[onnx]"` and `servekit serve model.onnx`: two commands to a served model; then the grpc extra.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.builders import WEIGHTS, write_onnx_model
from tests.conftest import missing
from tests.e2e.harness import ServerProcess

from .conftest import ROOT
from .test_docker import _build_context

WHEELHOUSE = ROOT / ".wheelhouse"
README = (ROOT / "README.md").read_text(encoding="utf-8")
INSTALL_TIMEOUT_S = 900

HANDLER = """
import numpy as np

from servekit import BaseHandler


class Negate(BaseHandler):
    def inference(self, inputs):
        return {"y": -np.asarray(inputs["x"])}
"""


def _pip(python: Path, *args: str, find_links: tuple[Path, ...] = ()) -> subprocess.CompletedProcess[str]:
    links = [arg for folder in (WHEELHOUSE, *find_links) for arg in ("--find-links", str(folder))]
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PIP_", "VIRTUAL_ENV"))}
    return subprocess.run([str(python), "-m", "pip", "--disable-pip-version-check", *args, "--no-index", *links],
                          capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, env=env)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """servekit's wheel, built by pip from a copy of the sources (the build hook generates the gRPC code)."""
    if not (WHEELHOUSE / ".complete").exists():
        missing(f"the wheelhouse {WHEELHOUSE}", "scripts/install test")
    work = tmp_path_factory.mktemp("wheel")
    context = _build_context(work / "src")
    built = _pip(Path(sys.executable), "wheel", "--no-deps", "--wheel-dir", str(work / "dist"), str(context))
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    [path] = (work / "dist").glob("servekit-*.whl")
    return path


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Path:
    """A fresh venv with the core wheel only (`pip install servekit`)."""
    folder = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True, timeout=300)
    python = folder / "bin" / "python"
    installed = _pip(python, "install", str(wheel))
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    return python


def _requirements(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        [metadata] = [name for name in archive.namelist() if name.endswith(".dist-info/METADATA")]
        text = archive.read(metadata).decode()
    return [line.removeprefix("Requires-Dist: ") for line in text.splitlines() if line.startswith("Requires-Dist: ")]


def test_the_core_requires_neither_onnxruntime_nor_grpcio(wheel: Path) -> None:
    from packaging.requirements import Requirement  # pytest's own dependency

    requirements = [Requirement(line) for line in _requirements(wheel)]

    def needed(extra: str) -> set[str]:
        return {r.name for r in requirements if r.marker is None or r.marker.evaluate({"extra": extra})}

    core = needed("")
    assert {"numpy", "fastapi", "protobuf"} <= core
    assert not {"onnxruntime", "onnxruntime-gpu", "grpcio", "torch", "scikit-learn", "pandas"} & core
    assert {"grpcio", "grpcio-health-checking", "grpcio-reflection"} <= needed("grpc")
    assert "onnxruntime" in needed("onnx") and "onnxruntime-gpu" not in needed("onnx")
    assert "onnxruntime-gpu" in needed("onnx-gpu") and "onnxruntime" not in needed("onnx-gpu")
    assert {"onnxruntime", "grpcio", "torch", "scikit-learn"} <= needed("all")
    assert "torch" in needed("torch") and {"skops", "pandas"} <= needed("sklearn")  # pandas: tables (pd)


@contextmanager
def _served(python: Path, source: Path | str, log: Path, *args: str, grpc: bool = False) -> Iterator[ServerProcess]:
    """The fresh venv's `servekit serve` on free loopback ports; without ``grpc`` no --grpc-port is
    given (the default, 8001, which a core install does not serve)."""
    server = ServerProcess(Path(source), log, *args)
    server.args[0] = str(python)  # the fresh venv's servekit, not this one's
    if not grpc:
        at = server.args.index("--grpc-port")
        del server.args[at:at + 2]
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _infer(server: ServerProcess, model: str, x: np.ndarray[Any, Any]) -> dict[str, Any]:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]}
    response = httpx.post(f"{server.base_url}/v2/models/{model}/infer", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return {out["name"]: out for out in response.json()["outputs"]}


def test_a_fresh_venv_serves_a_handler_then_onnx_after_installing_the_extra(venv: Path, wheel: Path,
                                                                            tmp_path: Path) -> None:
    for module in ("onnxruntime", "grpc"):  # the core pulled in neither
        bare = subprocess.run([str(venv), "-c", f"import {module}"], capture_output=True, text=True, timeout=60)
        assert bare.returncode != 0, module
    (tmp_path / "negate.py").write_text(HANDLER, encoding="utf-8")
    handler = (f"{tmp_path / 'negate.py'}:Negate", "--input", "x:FP32:-1,2", "--output", "y:FP32:-1,2")
    with _served(venv, handler[0], tmp_path / "handler.log", *handler[1:]) as server:
        assert _infer(server, "negate", np.array([[1.0, -3.0]], dtype=np.float32))["y"]["data"] == [-1.0, 3.0]
        assert "servekit: no gRPC: pip install 'servekit[grpc]' to serve it on port 8001" in server.log()
    asked = subprocess.run([str(venv), "-m", "servekit", "serve", *handler, "--grpc-port", "9999"],
                           capture_output=True, text=True, timeout=120)
    assert asked.returncode == 2
    assert "--grpc-port=9999: serving gRPC needs the grpc extra: pip install 'servekit[grpc]'" in asked.stderr

    model = write_onnx_model(tmp_path / "files").rename(tmp_path / "linear.onnx")
    with _served(venv, model, tmp_path / "no-onnx.log") as server:
        response = httpx.get(f"{server.base_url}/v2/models/linear/ready", timeout=10)
        assert response.status_code != 200
        answer = httpx.post(f"{server.base_url}/v2/models/linear/infer", json={"inputs": []}, timeout=10)
        assert answer.status_code == 503
        assert "pip install 'servekit[onnx]'" in answer.text and "onnx-gpu" in answer.text

    # The README's two commands, as written (pip offline here: --no-index and the wheelhouse).
    install, serve = (block.strip() for block in re.findall(r"```bash\n(.*?)```", README, flags=re.DOTALL)[:2])
    pip_words, serve_words = shlex.split(install), shlex.split(serve)
    assert pip_words[:2] == ["pip", "install"] and serve_words[:2] == ["servekit", "serve"]
    installed = _pip(venv, *pip_words[1:], find_links=(wheel.parent,))
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    model = model.rename(tmp_path / serve_words[2])
    x = np.ones((1, 4), dtype=np.float32)
    with _served(venv, model, tmp_path / "onnx.log", *serve_words[3:]) as server:
        assert np.allclose(_infer(server, model.stem, x)["y"]["data"], (x @ WEIGHTS).ravel())

    # The grpc extra: the same model over gRPC as well.
    installed = _pip(venv, "install", "servekit[grpc]", find_links=(wheel.parent,))
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    with _served(venv, model, tmp_path / "grpc.log", grpc=True) as server:
        import tritonclient.grpc as grpcclient

        client = grpcclient.InferenceServerClient(server.grpc_url)
        assert client.is_model_ready(model.stem)
        pixels = grpcclient.InferInput("x", [1, 4], "FP32")
        pixels.set_data_from_numpy(x)
        assert np.allclose(client.infer(model.stem, [pixels]).as_numpy("y"), x @ WEIGHTS)
