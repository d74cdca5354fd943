"""Every command and snippet of the README and of the docs pages it sends a reader to first (the quick
start, model repository and gRPC pages) runs, against the real demo server."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from servekit.config import parse_model_config
from servekit.serving.registry import Registry
from tests.builders import write_onnx_model

from .harness import ServerProcess, servekit_command

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def page(name: str) -> str:
    return (ROOT / "docs" / name).read_text(encoding="utf-8")


def blocks(language: str, text: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """What scripts/serve-demo runs: `servekit demo models` then `servekit serve models --default-model digits`."""
    models = tmp_path_factory.mktemp("demo") / "models"
    subprocess.run(servekit_command("demo", str(models)), check=True, capture_output=True, timeout=300)
    server = ServerProcess(models, tmp_path_factory.mktemp("logs") / "demo.log", "--default-model", "digits")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_readme_opens_with_install_one_command_to_serve_then_the_repository_commands() -> None:
    # What servekit is (the first paragraph), then pip install, then one command that serves a
    # model (tests/deploy/test_wheel.py runs both in a fresh venv), then the repository's two.
    headings = re.findall(r"^## (.+)$", README, flags=re.MULTILINE)[:3]
    assert headings == ["Install", "Serve a model in one command", "Quick start (from this repository)"]
    install, serve_one = blocks("bash", README)[:2]
    assert install.strip() == 'pip install "servekit[onnx]"'
    assert serve_one.strip() == "servekit serve model.onnx"
    assert "(docs/own-model.md)" in README.split("## Quick start")[0]


@pytest.mark.parametrize(("text", "index"), [(README, 2), (page("index.md"), 0)], ids=["README", "docs/index.md"])
def test_quick_start_has_two_commands_that_exist_and_ci_runs_the_test_one(text: str, index: int) -> None:
    quick_start = blocks("bash", text)[index]
    commands = [line.split("#")[0].strip() for line in quick_start.splitlines() if line.strip()]
    assert commands == ["./scripts/serve-demo", "./scripts/test"]
    for command in commands:
        assert os.access(ROOT / command, os.X_OK), command
    assert "scripts/test" in (ROOT / ".ci" / "run").read_text()
    serve_demo = (ROOT / "scripts" / "serve-demo").read_text()
    assert "servekit demo models" in serve_demo and "--default-model digits" in serve_demo


def test_curl_examples_answer_as_documented(demo_server: ServerProcess) -> None:
    example = next(block for block in blocks("bash", page("index.md")) if "curl" in block)
    commands = re.split(r"\n(?=curl )", example.replace("localhost:8000", demo_server.url).strip())
    assert len(commands) == 4
    outputs = []
    for command in commands:
        done = subprocess.run(["bash", "-c", command.replace("curl -s", "curl -sf")], capture_output=True,
                              text=True, timeout=30)
        assert done.returncode == 0, (command, done.stderr, demo_server.log())
        outputs.append(json.loads(done.stdout))
    ready, metadata, predicted, inferred = outputs
    assert ready == {"ready": True}
    # The demo writes version 2 (TorchScript) only where torch is installed: expected from the environment.
    assert metadata["versions"] == (["1", "2"] if importlib.util.find_spec("torch") else ["1"])
    assert predicted["predictions"] == [0] and predicted["probabilities"] is None
    assert inferred["id"] == "req-1"
    assert inferred["outputs"] == [{"name": "label", "datatype": "INT64", "shape": [1], "data": [0]}]


def test_python_client_snippet_runs(demo_server: ServerProcess) -> None:
    snippet = next(block for block in blocks("python", page("index.md")) if "tritonclient" in block)
    done = subprocess.run([sys.executable, "-c", snippet.replace("127.0.0.1:8000", demo_server.url)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"\[\d\]\n", done.stdout)


def test_grpc_snippets_run(demo_server: ServerProcess) -> None:
    snippets = [block for block in blocks("python", page("grpc.md")) if "127.0.0.1:8001" in block]
    assert len(snippets) == 2
    outputs = []
    for snippet in snippets:
        done = subprocess.run([sys.executable, "-c", snippet.replace("127.0.0.1:8001", demo_server.grpc_url)],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
    assert re.fullmatch(r"\[\d\]\n", outputs[0])
    assert re.fullmatch(r"\d\n\d 10\n\d 10\nSERVING\n", outputs[1])


def test_config_reference_parses() -> None:
    reference = next(block for block in blocks("yaml", page("model-repository.md")) if "max_batch_size" in block)
    config = parse_model_config(reference, "docs/model-repository.md")
    assert config.max_batch_size == 32 and config.batching.preferred_batch_sizes == [8, 16]


def test_handler_example_serves(tmp_path: Path) -> None:
    import asyncio

    import numpy as np

    handler = next(block for block in blocks("python", page("model-repository.md")) if "BaseHandler" in block)
    model = tmp_path / "doubler"
    (model / "1").mkdir(parents=True)
    (model / "handler.py").write_text(handler)
    (model / "config.yaml").write_text(
        "inputs: [{name: x, datatype: FP32, shape: [-1, 2]}]\n"
        "outputs: [{name: y, datatype: FP32, shape: [-1, 2]}]\n"
        "parameters: {scale: 3}\n"
    )
    registry = Registry(tmp_path)

    async def run() -> list[list[float]]:
        await registry.load_all()
        outputs = await registry.resolve("doubler").batcher.submit({"x": np.ones((2, 2), dtype=np.float32)})
        await registry.close()
        return outputs["y"].tolist()  # type: ignore[no-any-return]

    assert asyncio.run(run()) == [[3.0, 3.0], [3.0, 3.0]]


def test_the_readme_serves_one_onnx_file(tmp_path: Path) -> None:
    """The README's "Serve a model in one command": `servekit serve model.onnx` serves the file as
    the model `model`, metadata derived from the file, on HTTP and through the simple API."""
    serve_line = blocks("bash", README)[1].strip()
    assert serve_line == "servekit serve model.onnx"
    write_onnx_model(tmp_path / "made").rename(tmp_path / "model.onnx")
    server = ServerProcess(tmp_path / serve_line.split()[-1], tmp_path / "server.log")
    server.start()
    try:
        answer = httpx.get(f"{server.base_url}/v2/models/model", timeout=10)
        assert answer.status_code == 200, (answer.status_code, answer.text, server.log_path.read_text()[-2000:])
        metadata = answer.json()
        assert metadata["name"] == "model" and metadata["platform"] == "onnxruntime_onnx", metadata
        [tensor] = metadata["inputs"]
        rows = [[1.0] * tensor["shape"][-1]]
        answer = httpx.post(f"{server.base_url}/predict", json={"inputs": rows}, timeout=10)
        assert answer.status_code == 200 and len(answer.json()["predictions"]) == 1, answer.text
    finally:
        server.stop()
