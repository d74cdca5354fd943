"""docs/own-model.md, run as a reader would: its Python writes the model, its `servekit serve`
commands start the real server (on free loopback ports), its curl commands ask it."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import require_executable, require_module

from .harness import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "own-model.md").read_text(encoding="utf-8")


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC, flags=re.DOTALL)


def commands(block: str) -> list[str]:
    return [line.strip() for line in block.splitlines() if line.strip() and not line.startswith("#")]


@contextmanager
def documented_server(command: str, cwd: Path) -> Iterator[ServerProcess]:
    """The doc's `servekit serve SOURCE ... --http-port 8000` on free ports instead of 8000/8001."""
    words = shlex.split(command)
    assert words[:2] == ["servekit", "serve"] and words[-2:] == ["--http-port", "8000"], command
    source, rest = words[2], words[3:-2]
    server = ServerProcess(cwd / source, cwd / "server.log", *rest)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def ask(curl: str, server: ServerProcess) -> dict[str, object]:
    done = subprocess.run(["bash", "-c", curl.replace("localhost:8000", server.url).replace("curl -s", "curl -sf")],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, (curl, done.stderr, server.log())
    answer: dict[str, object] = json.loads(done.stdout)
    return answer


def test_the_install_line_and_the_table_name_extras_that_exist() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    [install] = commands(blocks("bash")[0])
    assert install == 'pip install "servekit[sklearn]"'
    for extra in re.findall(r"`([a-z-]+)`", DOC.split("## 2.")[0].split("The extras")[1]):
        assert extra in extras, extra
    assert "onnxruntime-gpu>=1.17" in extras["onnx-gpu"] and "onnxruntime>=1.17" in extras["onnx"]


def test_the_walkthrough_runs(tmp_path: Path) -> None:
    require_module("skops", "the sklearn extra")
    require_executable("curl", "apt-get install curl")
    make_model, handler, notebook = blocks("python")
    subprocess.run([sys.executable, "-c", make_model], cwd=tmp_path, check=True, timeout=120)
    assert (tmp_path / "largest.skops").is_file()

    [serve] = commands(blocks("bash")[1])
    predict, infer = commands(blocks("bash")[2])
    with documented_server(serve, tmp_path) as server:
        assert ask(predict, server)["predictions"] == [1]
        outputs = {out["name"]: out for out in ask(infer, server)["outputs"]}  # type: ignore[attr-defined]
        assert outputs["label"]["data"] == [0]

    assert handler.startswith("# handler.py\n")
    (tmp_path / "handler.py").write_text(handler, encoding="utf-8")
    serve_handler, infer_doubled = commands(blocks("bash")[3])
    with documented_server(serve_handler, tmp_path) as server:
        [y] = ask(infer_doubled, server)["outputs"]  # type: ignore[misc]
        assert (y["name"], y["data"]) == ("y", [3.0, -4.0])

    done = subprocess.run([sys.executable, "-c", notebook], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "[1]\n"


@pytest.mark.parametrize("line", [line for line in DOC.splitlines() if "servekit serve model.pt " in line])
def test_the_torchscript_example_parses(line: str) -> None:
    from servekit.single_file import parse_tensor

    words = shlex.split(re.search(r"`(servekit serve [^`]+)`", line).group(1))  # type: ignore[union-attr]
    tensors = [parse_tensor(words[i + 1]) for i, word in enumerate(words) if word in ("--input", "--output")]
    assert [t.shape for t in tensors] == [[-1, 8], [-1, 3]]
