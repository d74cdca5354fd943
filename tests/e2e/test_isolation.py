"""Models in their own processes, over real sockets: a model that kills its process fails only
its own request while another model's requests in flight are all answered, then answers again
from a new process; a hung call past ``execution_timeout_s`` has its process killed; SIGTERM
leaves no model process behind."""

from __future__ import annotations

import concurrent.futures
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from .harness import ServerProcess
from .repos import _write_config, _write_handler

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find processes")

_TENSORS = {
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 1]}],
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 1]}, {"name": "pid", "datatype": "INT64",
                                                                       "shape": [-1]}],
}


def _write_models(root: Path, **crashes_config: object) -> Path:
    """``crashes`` (isolated): x = -1 ends its process, x = -5 hangs; ``steady`` (in the server's
    process): each call waits until the file ``gate`` exists, so its requests stay in flight."""
    _write_config(root / "crashes", {"isolation": "process", "max_batch_size": 4, **crashes_config, **_TENSORS})
    _write_handler(root / "crashes", '''
        import os
        import time

        import numpy as np

        from servekit import BaseHandler


        class Crashes(BaseHandler):
            def inference(self, data):
                x = data["x"]
                if (x == -1).any():
                    os._exit(1)
                if (x == -5).any():
                    time.sleep(3600)
                return {"y": x * 2, "pid": np.full(len(x), os.getpid(), dtype=np.int64)}
    ''')
    gate = root.parent / "gate"
    _write_config(root / "steady", {"max_batch_size": 1, "parameters": {"gate": str(gate)}, **_TENSORS})
    _write_handler(root / "steady", '''
        import os
        import time
        from pathlib import Path

        import numpy as np

        from servekit import BaseHandler


        class Steady(BaseHandler):
            def initialize(self, context):
                self.gate = Path(context.parameters["gate"])

            def inference(self, data):
                self.gate.with_suffix(".started").touch()
                deadline = time.monotonic() + 60
                while not self.gate.exists() and time.monotonic() < deadline:
                    time.sleep(0.01)
                return {"y": data["x"] * 2, "pid": np.full(len(data["x"]), os.getpid(), dtype=np.int64)}
    ''')
    return gate


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    repository = tmp_path / "models"
    _write_models(repository)
    process = ServerProcess(repository, tmp_path / "server.log").start()
    try:
        yield process
    finally:
        process.stop()


def model_processes(server_pid: int) -> set[int]:
    """Live model processes whose parent is the server."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == server_pid and fields[0] != "Z" and b"servekit.runtimes.child" in cmdline:
            found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_for(condition: Callable[[], bool], timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def infer(base_url: str, model: str, value: float) -> httpx.Response:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [value]}]}
    return httpx.post(f"{base_url}/v2/models/{model}/infer", json=body, timeout=60)


def test_a_crash_fails_only_its_request_and_the_model_comes_back(server: ServerProcess, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    [first_child] = model_processes(server.pid)
    before = infer(server.base_url, "crashes", 1.0)
    assert before.status_code == 200 and before.json()["outputs"][1]["data"] == [first_child]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        steady = [pool.submit(infer, server.base_url, "steady", float(i)) for i in range(6)]
        assert wait_for(gate.with_suffix(".started").exists)  # the steady model is busy with them
        crashed = infer(server.base_url, "crashes", -1.0)
        assert not any(call.done() for call in steady)  # still in flight while the crash happened
        gate.touch()
        answers = [call.result() for call in steady]
    assert crashed.status_code == 500, crashed.text
    assert crashed.json() == {"error": "the model's process exited with code 1 while running this batch",
                              "request_id": crashed.headers["x-request-id"]}
    assert [answer.status_code for answer in answers] == [200] * 6
    assert sorted(answer.json()["outputs"][0]["data"][0] for answer in answers) == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
    assert {answer.json()["outputs"][1]["data"][0] for answer in answers} == {server.pid}
    again = infer(server.base_url, "crashes", 3.0)
    assert again.status_code == 200 and again.json()["outputs"][0]["data"] == [6.0]
    second_child = again.json()["outputs"][1]["data"][0]
    assert second_child != first_child and model_processes(server.pid) == {second_child}
    index = httpx.post(f"{server.base_url}/v2/repository/index", timeout=10).json()
    assert {row["name"]: row["state"] for row in index} == {"crashes": "READY", "steady": "READY"}
    assert server.stop() == 0
    assert not alive(second_child)
    log = server.log()
    assert "exited with code 1; starting a new one" in log and "a new process" in log


def test_a_hung_call_gets_504_and_its_process_is_killed(tmp_path: Path) -> None:
    repository = tmp_path / "models"
    _write_models(repository, execution_timeout_s=1)
    server = ServerProcess(repository, tmp_path / "server.log").start()
    try:
        [hung_child] = model_processes(server.pid)
        hung = infer(server.base_url, "crashes", -5.0)
        assert hung.status_code == 504, hung.text
        assert wait_for(lambda: not alive(hung_child))  # unlike a thread, the call really stopped
        after = infer(server.base_url, "crashes", 2.0)  # a fresh instance, in a new process
        assert after.status_code == 200 and after.json()["outputs"][1]["data"][0] not in (hung_child, server.pid)
        children = model_processes(server.pid)
        assert len(children) == 1
    finally:
        code = server.stop()
    assert code == 0
    assert not any(alive(pid) for pid in children)


def test_sigterm_stops_every_model_process(tmp_path: Path) -> None:
    repository = tmp_path / "models"
    _write_models(repository)
    (repository / "crashes" / "config.yaml").write_text(
        (repository / "crashes" / "config.yaml").read_text() + "instances: 3\n")
    server = ServerProcess(repository, tmp_path / "server.log").start()
    try:
        children = model_processes(server.pid)
        assert len(children) == 3 and os.getpid() not in children
        assert infer(server.base_url, "crashes", 1.0).status_code == 200
    finally:
        code = server.stop()
    assert code == 0
    assert not any(alive(pid) for pid in children)
