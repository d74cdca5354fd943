"""The management, archive and traffic commands of docs/management.md run as written, against the demo server."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .harness import servekit_command
from .managed import ManagedServer

SECTION = (Path(__file__).resolve().parents[2] / "docs" / "management.md").read_text(encoding="utf-8")


def bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", SECTION, flags=re.DOTALL)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedServer]:
    models = tmp_path_factory.mktemp("demo") / "models"
    subprocess.run(servekit_command("demo", str(models), "--no-torch"), check=True, capture_output=True, timeout=300)
    # version 2 of digits is TorchScript when torch is installed; an ONNX copy serves the same here, faster
    (models / "digits" / "2").mkdir()
    shutil.copy(models / "digits" / "1" / "model.onnx", models / "digits" / "2" / "model.onnx")
    server = ManagedServer(models, tmp_path_factory.mktemp("logs") / "demo.log", "--default-model", "digits",
                           token=None)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def run_lines(block: str, server: ManagedServer) -> list[str]:
    """Each command of ``block`` in bash, in order (TOKEN=... sets the variable for the rest)."""
    models = str(server.repository)
    env = {key: value for key, value in os.environ.items() if not key.startswith("SERVEKIT_")}
    outputs = []
    for line in re.split(r"\n(?! )", block.replace("\\\n", " ").strip()):
        command = (line.replace(" models/", f" {models}/").replace("localhost:8003", server.management_url)
                   .replace("localhost:8000", server.base_url).replace("curl -s ", "curl -sf "))
        if command.startswith("servekit "):
            command = f"{sys.executable} -m {command}"
        if command.startswith("TOKEN="):
            env["TOKEN"] = subprocess.run(["bash", "-c", command + '; printf %s "$TOKEN"'], capture_output=True,
                                          text=True, check=True, timeout=10).stdout
            continue
        done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60, env=env)
        assert done.returncode == 0, (command, done.stdout, done.stderr, server.log())
        outputs.append(done.stdout)
    return outputs


def test_the_management_commands_answer_as_documented(demo: ManagedServer) -> None:
    archive, inspected, registered, listed, described, scaled, split, default, removed = run_lines(
        bash_blocks()[0], demo)
    assert "model digits_v1 version 1 (onnx, " in archive
    assert "every checksum matches" in inspected and "name: digits_v1" in inspected
    assert json.loads(registered)["modelName"] == "digits_v1"
    assert "digits_v1" in [m["modelName"] for m in json.loads(listed)["models"]]
    [version] = json.loads(described)
    assert (version["batchSize"], version["maxBatchDelay"], version["minWorkers"]) == (16, 5.0, 2)
    assert json.loads(scaled)["status"] == "Processing worker updates..."
    assert json.loads(split)["traffic"] == {"1": 90, "2": 10}
    assert json.loads(default)["status"] == 'Default version successfully updated for model "digits" to "2"'
    assert json.loads(removed)["status"] == 'Model "digits_v1" unregistered'
    assert not (demo.repository / "digits_v1").exists()


def test_a_routing_key_sticks_to_one_version(demo: ManagedServer) -> None:
    token = (demo.repository / ".servekit" / "management-token").read_text().strip()
    with demo.management(token) as client:
        assert client.put("/models/digits/traffic", json={"1": 50, "2": 50}).status_code == 200
    answers = {json.loads(out)["model_version"] for _ in range(5) for out in run_lines(bash_blocks()[1], demo)}
    assert len(answers) == 1
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0.0] * 64}]}
    with httpx.Client(base_url=demo.base_url, timeout=10) as client:
        spread = {client.post("/v2/models/digits/infer", json=body, headers={"X-Routing-Key": f"user-{n}"}
                              ).json()["model_version"] for n in range(30)}
    assert spread == {"1", "2"}
