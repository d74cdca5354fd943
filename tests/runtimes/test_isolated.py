"""IsolatedRuntime with real child processes: predict, per-request runtimes, every datatype,
crashes and restarts, the crash loop bound, abort, unload and the death of the server."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from servekit.batching.queue import BatchPolicy
from servekit.batching.scheduler import Batcher
from servekit.config import ModelConfig
from servekit.errors import DeadlineExceeded, InvalidInput, ModelFailed, ModelNotReady
from servekit.formats.torchserve import HandlerFailed
from servekit.runtimes import RuntimeContext, create_runtime
from servekit.runtimes.base import RuntimeRequest
from servekit.runtimes.isolated import IsolatedRuntime, RestartPolicy
from servekit.runtimes.process import describe_exit
from servekit.types import DATATYPES
from tests.builders import write_onnx_model

# x < 0 picks a misdeed: -1 os._exit(3), -2 SIGSEGV, -3 raise ValueError, -4 raise the handler's own
# exception class, -5 sleep (a hung call), -6 log and print; otherwise y = 2x and the process id.
HANDLER = '''
import asyncio
import logging
import os
import signal
import sys
import time

import numpy as np

from servekit import BaseHandler

log = logging.getLogger("tests.isolated.handler")


class OwnError(Exception):
    pass


class Misbehaves(BaseHandler):
    def initialize(self, context):
        if context.parameters.get("fail_load"):
            raise ValueError("cannot load: asked to fail")
        if context.parameters.get("exit_on_load"):
            os._exit(4)
        self.hang_s = float(context.parameters.get("hang_s", 3600))

    def inference(self, data):
        x = data["x"]
        if (x == -1).any():
            os._exit(3)
        if (x == -2).any():
            os.kill(os.getpid(), signal.SIGSEGV)
        if (x == -3).any():
            raise ValueError("bad row\\nsecond line")
        if (x == -4).any():
            raise OwnError("defined in the handler module")
        if (x == -5).any():
            time.sleep(self.hang_s)
        if (x == -6).any():
            log.warning("a warning from the model's process %d", os.getpid())
            print("printed by the model", flush=True)
        return {"y": x * 2, "pid": np.full(len(x), os.getpid(), dtype=np.int64)}
'''

IDENTITY = '''
from servekit import BaseHandler


class Identity(BaseHandler):
    def inference(self, data):
        return {"OUT_" + name[len("IN_"):]: array for name, array in data.items()}
'''

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find processes")

FAST = RestartPolicy(delays_s=(0.0,), max_crashes=3, window_s=600.0)


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_for(condition: Callable[[], bool], timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def rows(*values: float) -> dict[str, np.ndarray[Any, Any]]:
    return {"x": np.array([[v] for v in values], dtype=np.float32)}


class Runtimes:
    """Isolated runtimes made by a test; every one is unloaded after it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.made: list[IsolatedRuntime] = []

    def handler(self, source: str = HANDLER, policy: RestartPolicy = FAST, name: str = "misbehaves",
                **parameters: Any) -> IsolatedRuntime:
        model_dir = self.root / name
        (model_dir / "1").mkdir(parents=True, exist_ok=True)
        (model_dir / "handler.py").write_text(textwrap.dedent(source))
        config = ModelConfig(isolation="process", device="cpu", parameters=parameters)
        return self.load(IsolatedRuntime(RuntimeContext(name, 1, model_dir, model_dir / "1", config), "python",
                                         policy))

    def load(self, runtime: IsolatedRuntime) -> IsolatedRuntime:
        self.made.append(runtime)
        runtime.load()
        return runtime


@pytest.fixture
def runtimes(tmp_path: Path) -> Iterator[Runtimes]:
    made = Runtimes(tmp_path)
    yield made
    for runtime in made.made:
        runtime.unload()


def test_an_onnx_model_runs_in_its_own_process_with_its_signature(runtimes: Runtimes, tmp_path: Path) -> None:
    write_onnx_model(tmp_path / "linear" / "1")
    context = RuntimeContext("linear", 1, tmp_path / "linear", tmp_path / "linear" / "1", ModelConfig())
    runtime = create_runtime("onnx", context, isolated=True)
    assert isinstance(runtime, IsolatedRuntime)
    runtimes.load(runtime)
    assert runtime.platform == "onnxruntime_onnx" and runtime.device == "cpu" and not runtime.per_request
    signature = runtime.signature()
    assert signature is not None and [spec.name for spec in signature.inputs] == ["x"]
    outputs = runtime.predict({"x": np.array([[1, 0, 0, 0]], dtype=np.float32)})
    np.testing.assert_allclose(outputs["y"], [[0.0, 0.1, 0.2]], rtol=1e-6)
    assert runtime.pid is not None and runtime.pid != os.getpid() and alive(runtime.pid)


def test_every_datatype_and_a_large_tensor_cross_the_process_boundary(runtimes: Runtimes) -> None:
    runtime = runtimes.handler(IDENTITY, name="identity")
    inputs: dict[str, np.ndarray[Any, Any]] = {}
    for datatype, dtype in DATATYPES.items():
        if datatype == "BYTES":
            array = np.array([[b"a", b"\x00b", "é".encode()]] * 2, dtype=object)
        else:
            array = np.arange(6).reshape(2, 3).astype(dtype)
        inputs[f"IN_{datatype}"] = array
    inputs["IN_LARGE"] = np.random.default_rng(1).standard_normal((1024, 1024)).astype(np.float32)  # 4 MiB
    inputs["IN_BIG_ENDIAN"] = np.arange(100_000, dtype=">f8")
    outputs = runtime.predict(inputs)
    assert set(outputs) == {"OUT_" + name[3:] for name in inputs}
    for name, array in inputs.items():
        answer = outputs["OUT_" + name[3:]]
        assert answer.dtype == array.dtype and answer.shape == array.shape, name
        np.testing.assert_array_equal(answer, array)
    assert outputs["OUT_BYTES"][0, 2] == "é".encode()


def test_the_models_exceptions_come_back_as_they_were_raised(runtimes: Runtimes) -> None:
    runtime = runtimes.handler()
    with pytest.raises(ValueError, match=r"^bad row") as raised:
        runtime.predict(rows(-3.0))
    assert any("in the model's process" in note for note in raised.value.__notes__)
    with pytest.raises(Exception, match="defined in the handler module") as own:
        runtime.predict(rows(-4.0))  # its class lives in the handler module only: a stand-in of the same name
    assert type(own.value).__name__ == "OwnError"
    assert runtime.predict(rows(1.0))["y"].tolist() == [[2.0]]  # the same process goes on serving


def test_a_crash_in_a_batch_fails_that_batch_and_a_new_process_answers_the_next(runtimes: Runtimes) -> None:
    runtime = runtimes.handler()
    first = int(runtime.predict(rows(1.0))["pid"][0])
    with pytest.raises(ModelFailed, match=r"^the model's process exited with code 3 while running this batch$"):
        runtime.predict(rows(1.0, -1.0, 2.0))
    assert not alive(first)
    answer = runtime.predict(rows(5.0))  # waits for the restart
    assert answer["y"].tolist() == [[10.0]]
    assert int(answer["pid"][0]) != first and runtime.unavailable_reason() is None


def test_a_crash_fails_every_request_of_its_batch_and_the_batcher_goes_on(runtimes: Runtimes) -> None:
    runtime = runtimes.handler()

    async def body() -> None:
        batcher = Batcher("misbehaves:1", [runtime], BatchPolicy(max_rows=8, max_delay_s=0.0))
        # submitted in one loop turn: one batch of three requests, one of which kills the process
        batch = [asyncio.create_task(batcher.submit(rows(value))) for value in (1.0, -1.0, 2.0)]
        results = await asyncio.gather(*batch, return_exceptions=True)
        assert [type(result) for result in results] == [ModelFailed] * 3
        assert "exited with code 3" in str(results[0])
        answer = await batcher.submit(rows(3.0))
        assert answer["y"].tolist() == [[6.0]] and int(answer["pid"][0]) == runtime.pid
        await batcher.close()

    asyncio.run(asyncio.wait_for(body(), 60))


def test_execution_timeout_kills_the_hung_process_and_a_fresh_instance_serves(runtimes: Runtimes) -> None:
    runtime = runtimes.handler()
    hung_pid = runtime.pid
    assert hung_pid is not None

    async def body() -> None:
        batcher = Batcher("misbehaves:1", [runtime], BatchPolicy(max_rows=8), execution_timeout_s=0.5,
                          respawn=lambda hung: runtimes.handler())
        with pytest.raises(DeadlineExceeded):
            await batcher.submit(rows(-5.0))  # sleeps an hour in its process
        assert await asyncio.to_thread(wait_for, lambda: not alive(hung_pid))  # killed, not left running
        answer = await batcher.submit(rows(1.0))
        assert answer["y"].tolist() == [[2.0]] and int(answer["pid"][0]) not in (hung_pid, os.getpid())
        await batcher.close()

    asyncio.run(asyncio.wait_for(body(), 60))


def test_a_segfault_is_named_by_its_signal(runtimes: Runtimes) -> None:
    runtime = runtimes.handler()
    with pytest.raises(ModelFailed, match=r"was killed by signal 11 \(SIGSEGV\) while running this batch"):
        runtime.predict(rows(-2.0))
    assert runtime.predict(rows(1.0))["y"].tolist() == [[2.0]]


def test_a_process_killed_between_calls_is_restarted_before_the_next_call(runtimes: Runtimes) -> None:
    runtime = runtimes.handler()
    first = runtime.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    assert wait_for(lambda: runtime.pid not in (None, first))  # noticed without any call
    assert int(runtime.predict(rows(1.0))["pid"][0]) == runtime.pid


def test_after_max_crashes_the_instance_stays_down_with_its_reason(runtimes: Runtimes) -> None:
    runtime = runtimes.handler()
    pids = []
    for _ in range(FAST.max_crashes):
        runtime.predict(rows(1.0))  # a process serves again after each crash but the last
        pids.append(runtime.pid)
        with pytest.raises(ModelFailed):
            runtime.predict(rows(-1.0))
    reason = runtime.unavailable_reason()
    assert reason is not None and "crashed 3 times within 600 s (last: exited with code 3)" in reason
    with pytest.raises(ModelNotReady, match="is down: its process crashed 3 times"):
        runtime.predict(rows(1.0))
    assert runtime.pid is None and not any(alive(pid) for pid in pids if pid is not None)


def test_restarts_back_off_by_the_policy(runtimes: Runtimes) -> None:
    runtime = runtimes.handler(policy=RestartPolicy(delays_s=(0.0, 3600.0), max_crashes=10))
    with pytest.raises(ModelFailed):
        runtime.predict(rows(-1.0))
    runtime.predict(rows(1.0))  # the first restart is immediate
    with pytest.raises(ModelFailed):
        runtime.predict(rows(-1.0))
    time.sleep(0.5)
    assert runtime.pid is None  # the second waits its hour; unload below cuts it short


def test_a_load_failure_raises_the_models_own_error_and_leaves_no_process(runtimes: Runtimes) -> None:
    with pytest.raises(ValueError, match="cannot load: asked to fail"):
        runtimes.handler(fail_load=True)
    with pytest.raises(RuntimeError, match="the model's process exited with code 4 while loading the model"):
        runtimes.handler(name="exits", exit_on_load=True)
    assert not child_pids()


def test_abort_kills_a_hung_call_and_unload_leaves_no_process(runtimes: Runtimes) -> None:
    runtime = runtimes.handler()
    pid = runtime.pid
    assert pid is not None
    errors: list[BaseException] = []
    call = threading.Thread(target=lambda: _capture(errors, lambda: runtime.predict(rows(-5.0))))
    call.start()
    time.sleep(0.3)
    assert call.is_alive()  # hung in the child
    runtime.abort()
    call.join(30)
    assert not call.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], ModelFailed) and "SIGKILL" in str(errors[0])
    runtime.unload()
    assert not alive(pid) and runtime.pid is None
    with pytest.raises(ModelNotReady):
        runtime.predict(rows(1.0))


def test_unload_stops_every_process_of_the_instance(runtimes: Runtimes) -> None:
    runtime = runtimes.handler()
    pid = runtime.pid
    assert pid is not None and pid in child_pids()
    runtime.unload()
    assert not alive(pid) and pid not in child_pids()


def test_logs_and_output_of_the_model_reach_the_server(runtimes: Runtimes, caplog: pytest.LogCaptureFixture,
                                                     capfd: pytest.CaptureFixture[str]) -> None:
    runtime = runtimes.handler()
    with caplog.at_level(logging.WARNING, logger="tests.isolated.handler"):
        runtime.predict(rows(-6.0))
        assert wait_for(lambda: any("a warning from the model's process" in r.getMessage() for r in caplog.records))
    [record] = [r for r in caplog.records if r.name == "tests.isolated.handler"]
    assert record.process == runtime.pid and record.levelno == logging.WARNING
    assert wait_for(lambda: "printed by the model" in capfd.readouterr().out, 10)


def test_a_per_request_runtime_runs_isolated(tmp_path: Path, runtimes: Runtimes) -> None:
    from tests.formats.torchserve.mar import HANDLERS, archive

    model_dir = tmp_path / "echo"
    archive(tmp_path / "export", "echo", HANDLERS / "echo_handler.py", archive_format="no-archive")
    (tmp_path / "export" / "echo").rename(model_dir)
    context = RuntimeContext("echo", 1, model_dir, model_dir / "1", ModelConfig(max_batch_size=4))
    runtime = runtimes.load(IsolatedRuntime(context, "torchserve", FAST))
    assert runtime.per_request and runtime.platform == "torchserve"

    def request(mode: str, body: bytes) -> RuntimeRequest:
        array = np.empty(1, dtype=object)
        array[0] = body
        return RuntimeRequest({"body": array}, {"content_type": "text/plain", "headers": [["X-Mode", mode]]},
                              (), f"id-{mode}")

    malformed = RuntimeRequest({"body": np.zeros(2, dtype=np.float32)})
    ok, refused = runtime.predict_requests([request("str", b"hello"), malformed])
    assert isinstance(ok, dict) and ok["body"][0] == b"plain text" and ok["status"].tolist() == [200]
    assert isinstance(refused, InvalidInput)  # one request of the batch fails alone, with its status
    [failed] = runtime.predict_requests([request("predexc", b"x")])
    assert isinstance(failed, HandlerFailed) and failed.torchserve_status == 418  # its fields crossed too
    [described] = runtime.predict_requests([request("describe", b"\x00\x01" * 10_000)])
    assert isinstance(described, dict) and b"id-describe" in described["body"][0]


def test_the_models_process_ends_when_the_server_dies(tmp_path: Path) -> None:
    script = tmp_path / "server.py"
    script.write_text(textwrap.dedent(f'''
        import os, sys, textwrap, time
        from pathlib import Path
        sys.path[:0] = {sys.path!r}
        from servekit.config import ModelConfig
        from servekit.runtimes import RuntimeContext
        from servekit.runtimes.isolated import IsolatedRuntime
        model_dir = Path({str(tmp_path / "m")!r})
        (model_dir / "1").mkdir(parents=True)
        (model_dir / "handler.py").write_text({HANDLER!r})
        runtime = IsolatedRuntime(RuntimeContext("m", 1, model_dir, model_dir / "1", ModelConfig()), "python")
        runtime.load()
        print(runtime.pid, flush=True)
        import threading
        threading.Thread(target=runtime.predict, args=({{"x": __import__("numpy").full((1, 1), -5.0)}},)).start()
        time.sleep(3600)
    '''))
    server = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        child = int(server.stdout.readline())
        assert alive(child)
        time.sleep(0.3)  # the child is inside a call that never returns
        server.kill()
        server.wait()
        assert wait_for(lambda: not alive(child))
    finally:
        server.kill()
        server.wait()


def test_exit_descriptions() -> None:
    assert describe_exit(1) == "exited with code 1"
    assert describe_exit(-9) == "was killed by signal 9 (SIGKILL)"
    assert describe_exit(-11) == "was killed by signal 11 (SIGSEGV)"


def child_pids() -> set[int]:
    """Model processes whose parent is this test process."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == os.getpid() and fields[0] != "Z" and b"servekit.runtimes.child" in cmdline:
            found.add(int(entry.name))
    return found


def _capture(errors: list[BaseException], call: Callable[[], object]) -> None:
    try:
        call()
    except BaseException as exc:
        errors.append(exc)
