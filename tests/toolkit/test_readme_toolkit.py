"""The toolkit page (docs/toolkit.md) runs as written: convert on the demo repository, bench against it, advise."""

from __future__ import annotations

import contextlib
import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from servekit.cli import main
from servekit.config import parse_model_config
from tests.conftest import TORCH_INSTALL, require_module

from ..e2e.harness import ServerProcess
from .models import serve_once

SECTION = (Path(__file__).resolve().parents[2] / "docs" / "toolkit.md").read_text(encoding="utf-8")
# Each documented run lasts 10 s; here 0.2 s, without warm-up: the commands are the same.
SHORTER = {"--duration 10": "--duration 0.2 --warmup 0", "--budget 10": "--budget 1"}


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", SECTION, flags=re.DOTALL)


def commands(containing: str) -> list[str]:
    block = next(block for block in blocks("bash") if containing in block)
    return [line for line in block.splitlines() if line.strip()]


def run(command: str, folder: Path, replacements: dict[str, str] | None = None) -> str:
    for old, new in {**SHORTER, **(replacements or {})}.items():
        command = command.replace(old, new)
    program, *args = shlex.split(command)
    assert program == "servekit", command
    with contextlib.chdir(folder):
        result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, f"{command}\n{result.output}"
    return result.output


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo repository in ./models, net.py beside it, and the page's convert commands run there."""
    require_module("torch", TORCH_INSTALL)
    folder = tmp_path_factory.mktemp("readme")
    with contextlib.chdir(folder):
        assert CliRunner().invoke(main, ["demo", "models"]).exit_code == 0
    (folder / "net.py").write_text(next(b for b in blocks("python") if "class TinyNet" in b), encoding="utf-8")
    for command in commands("servekit convert"):
        run(command, folder)
    return folder


@pytest.fixture(scope="module")
def server(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """`servekit serve models --default-model digits`, as the bench section says."""
    process = ServerProcess(folder / "models", tmp_path_factory.mktemp("logs") / "readme.log",
                            "--default-model", "digits")
    process.start()
    try:
        yield process
    finally:
        process.stop()


def test_convert_examples_serve_what_their_sources_answer(folder: Path) -> None:
    models = folder / "models"
    pixels = np.tile(np.arange(64, dtype=np.float32) % 17, (3, 1))
    torchscript = serve_once(models, "digits", {"input": pixels})  # default version 1, ONNX; 2 is the .pt source
    converted = serve_once(models, "digits_onnx", {"input": pixels})  # named `input`, from digits' config.yaml
    np.testing.assert_array_equal(converted["label"], torchscript["label"])
    np.testing.assert_allclose(converted["probabilities"], torchscript["probabilities"], atol=1e-5)
    sklearn = serve_once(models, "digits_sklearn_onnx", {"input": pixels})
    np.testing.assert_array_equal(sklearn["label"], torchscript["label"])
    tiny = serve_once(models, "tiny", {"features": np.ones((2, 8), dtype=np.float32)})
    assert tiny["output"].shape == (2, 3)
    assert "max abs error" not in SECTION.split("```text", 1)[0]  # the sample output is shown after the commands


def test_bench_examples(folder: Path, server: ServerProcess) -> None:
    addresses = {"http://127.0.0.1:8000": server.base_url, "127.0.0.1:8001": server.grpc_url,
                 "127.0.0.1:8000": server.url}
    outputs = [run(command, folder, addresses) for command in commands("servekit bench")]
    assert len(outputs) == 4
    results = json.loads((folder / "bench-results" / "results.json").read_text())
    assert [run["concurrency"] for run in results["runs"]] == [1, 8, 32]
    assert all(run["errors"] == 0 and run["requests_ok"] > 0 for run in results["runs"])
    assert (folder / "bench-results" / "plot.png").stat().st_size > 1000
    assert "http vs grpc at 1 client:" in outputs[1]
    assert "200 req/s" in outputs[2] and "digits_onnx vs digits at 8 clients" in outputs[3]


def test_advise_examples(folder: Path) -> None:
    matrix, measured = (run(command, folder) for command in commands("servekit advise"))
    assert "best fit: gRPC transport (weighted sum 14)" in matrix and "then: ONNX Runtime (weighted sum 13)" in matrix
    assert "runtime   onnx" in measured
    config_path = folder / "models" / "digits_onnx" / "config.yaml"
    assert "Written by `servekit advise`" in config_path.read_text()
    assert parse_model_config(config_path.read_text(), config_path).runtime == "onnx"
    answer = serve_once(folder / "models", "digits_onnx", {"input": np.zeros((2, 64), dtype=np.float32)})
    assert answer["label"].shape == (2,)
