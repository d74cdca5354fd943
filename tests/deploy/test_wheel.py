"""servekit's wheel, as a new user gets it: built from the sources, installed into a fresh venv
(offline, from the wheelhouse scripts/install test builds), then serving over loopback.

The core must not require onnxruntime (a GPU user's onnxruntime-gpu is the same package): without
an ONNX extra it serves handlers, and an ONNX model is refused per model with the extra to install.
Then `pip install "servekit[onnx]"` and `servekit serve model.onnx`: two commands to a served model.
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


def test_the_core_does_not_require_an_onnxruntime(wheel: Path) -> None:
    from packaging.requirements import Requirement  # pytest's own dependency

    requirements = [Requirement(line) for line in _requirements(wheel)]

    def needed(extra: str) -> set[str]:
        return {r.name for r in requirements if r.marker is None or r.marker.evaluate({"extra": extra})}

    core = needed("")
    assert {"numpy", "fastapi", "grpcio"} <= core
    assert not {"onnxruntime", "onnxruntime-gpu", "torch", "scikit-learn"} & core
    assert "onnxruntime" in needed("onnx") and "onnxruntime-gpu" not in needed("onnx")
    assert "onnxruntime-gpu" in needed("onnx-gpu") and "onnxruntime" not in needed("onnx-gpu")
    assert {"onnxruntime", "torch", "scikit-learn"} <= needed("all")
    assert "torch" in needed("torch") and "skops" in needed("sklearn")


@contextmanager
def _served(python: Path, source: Path | str, log: Path, *args: str) -> Iterator[ServerProcess]:
    server = ServerProcess(Path(source), log, *args)
    server.args[0] = str(python)  # the fresh venv's servekit, not this one's
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_a_fresh_venv_serves_a_handler_then_onnx_after_installing_the_extra(venv: Path, wheel: Path,
                                                                            tmp_path: Path) -> None:
    bare = subprocess.run([str(venv), "-c", "import onnxruntime"], capture_output=True, text=True, timeout=60)
    assert bare.returncode != 0  # the core pulled in no onnxruntime
    (tmp_path / "negate.py").write_text(HANDLER, encoding="utf-8")
    with _served(venv, f"{tmp_path / 'negate.py'}:Negate", tmp_path / "handler.log", "--input", "x:FP32:-1,2",
                 "--output", "y:FP32:-1,2") as server:
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1.0, -3.0]}]}
        response = httpx.post(f"{server.base_url}/v2/models/negate/infer", json=body, timeout=30)
        assert response.status_code == 200, response.text
        assert response.json()["outputs"][0]["data"] == [-1.0, 3.0]

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
    with _served(venv, model, tmp_path / "onnx.log", *serve_words[3:]) as server:
        x = np.ones((1, 4), dtype=np.float32)
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": x.ravel().tolist()}]}
        response = httpx.post(f"{server.base_url}/v2/models/{model.stem}/infer", json=body, timeout=30)
        assert response.status_code == 200, response.text
        y = next(out for out in response.json()["outputs"] if out["name"] == "y")
        assert np.allclose(y["data"], (x @ WEIGHTS).ravel())
