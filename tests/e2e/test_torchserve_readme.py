"""The commands of docs/torchserve.md ("Coming from TorchServe") run as written: the real
torch-model-archiver, then `servekit serve` as the page starts it (on free ports instead of 8080-8082),
then its curl calls."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.formats.torchserve.mar import HANDLERS, require_archiver, write_torchscript

from .harness import ServerProcess, free_port
from .torchserve_server import recorded_body

SECTION = (Path(__file__).resolve().parents[2] / "docs" / "torchserve.md").read_text(encoding="utf-8")
TORCHSERVE_PORTS = {"8080": "http", "8081": "management", "8082": "metrics"}


def bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", SECTION, flags=re.DOTALL)


def commands(block: str) -> list[str]:
    return [line for line in re.split(r"\n(?! )", block.replace("\\\n", " ").strip()) if line]


class ReadmeServer(ServerProcess):
    """The page's `servekit serve` line, its TorchServe ports swapped for free ones, run in ``folder``."""

    def __init__(self, line: str, folder: Path) -> None:
        super().__init__(folder, folder / "server.log")
        self.management_port = free_port()
        ports = {"8080": self.port, "8081": self.management_port, "8082": self.metrics_port}
        words = [str(ports.get(word, word)) for word in shlex.split(line)]
        assert words[:2] == ["servekit", "serve"], line
        self.args = [sys.executable, "-m", "servekit", *words[1:], "--host", "127.0.0.1",
                     "--grpc-port", str(self.grpc_port)]
        self.folder = folder

    def start(self) -> ReadmeServer:
        env = {key: value for key, value in os.environ.items() if not key.startswith("SERVEKIT_")}
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, env=env,
                                            cwd=self.folder, start_new_session=True)
        self.wait_ready()
        return self


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReadmeServer]:
    """The user's folder: their handler, model and model_config.yaml; then the page's first block."""
    require_archiver()
    folder = tmp_path_factory.mktemp("user")
    shutil.copy(HANDLERS / "text_handler.py", folder / "text_handler.py")
    shutil.copy(HANDLERS / "model_config.yaml", folder / "model_config.yaml")
    write_torchscript(folder)  # tiny.pt
    (folder / "model_store").mkdir()
    archive_line, serve_line = commands(bash_blocks()[0])
    assert archive_line.startswith("torch-model-archiver ")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    done = subprocess.run(["bash", "-c", archive_line], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert (folder / "model_store" / "tiny.mar").is_file()
    process = ReadmeServer(serve_line, folder).start()
    try:
        yield process
    finally:
        process.stop()


def test_the_readme_commands_answer_as_torchserve_does(server: ReadmeServer) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SERVEKIT_")}
    outputs = []
    for line in commands(bash_blocks()[1]):
        command = (line.replace("localhost:8080", f"127.0.0.1:{server.port}")
                   .replace("localhost:8081", f"127.0.0.1:{server.management_port}").replace("curl -s ", "curl -sf "))
        if command.startswith("TOKEN="):
            env["TOKEN"] = subprocess.run(["bash", "-c", command + '; printf %s "$TOKEN"'], cwd=server.folder,
                                          capture_output=True, text=True, check=True, timeout=10).stdout
            continue
        done = subprocess.run(["bash", "-c", command], cwd=server.folder, env=env, capture_output=True,
                              timeout=60)
        assert done.returncode == 0, (command, done.stderr, server.log())
        outputs.append(done.stdout)
    ping, text, versioned, registered, listed, described, scaled, removed = outputs
    assert ping == recorded_body("ping")
    assert text == versioned == recorded_body("tiny_text")
    assert json.loads(registered) == {"status": 'Model "tiny_b8" Version: 1.0 registered with 1 initial workers'}
    assert json.loads(listed) == {"models": [{"modelName": "tiny", "modelUrl": "tiny.mar"},
                                             {"modelName": "tiny_b8", "modelUrl": "tiny.mar"}]}
    [version] = json.loads(described)
    assert (version["modelVersion"], version["batchSize"], version["maxBatchDelay"]) == ("1.0", 8, 50)
    assert json.loads(scaled) == {"status": "Workers scaled to 2 for model: tiny_b8"}
    assert json.loads(removed) == {"status": 'Model "tiny_b8" unregistered'}
    assert (server.folder / "model_store" / "tiny.mar").is_file()
