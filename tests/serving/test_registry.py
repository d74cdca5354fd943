from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from servekit.errors import ModelFailed, ModelNotFound, ModelNotReady
from servekit.serving.registry import Registry
from servekit.serving.version import LoadState
from tests.builders import write_onnx_model, write_repository
from tests.gate import GATE_HANDLER_CODE, Gate


def load(root: Path) -> Registry:
    registry = Registry(root)
    asyncio.run(registry.load_all())
    return registry


def test_one_broken_model_does_not_stop_the_others(tmp_path: Path) -> None:
    write_repository(tmp_path, {"good": None, "bad": "max_batch_size: lots\n"})
    (tmp_path / "empty").mkdir()
    registry = load(tmp_path)
    rows = {row["name"]: row for row in registry.index()}
    assert rows["good"]["state"] == "READY"
    assert rows["bad"]["state"] == "UNAVAILABLE"
    # Clients are told what is wrong and in which file of the repository, never where it lies.
    assert rows["bad"]["reason"].startswith("bad/config.yaml: max_batch_size")
    assert all(str(tmp_path) not in row["reason"] for row in rows.values())
    assert str(tmp_path / "bad" / "config.yaml") in registry.entry("bad").reason  # the full reason: log, management
    assert "no numbered version folders" in rows["empty"]["reason"]
    with pytest.raises(ModelNotReady, match="max_batch_size") as refused:
        registry.resolve("bad")
    assert str(tmp_path) not in refused.value.message
    with pytest.raises(ModelNotFound) as unknown:
        asyncio.run(registry.load("nope"))
    assert unknown.value.message == "no model folder 'nope' in the model repository"


def test_signature_and_batch_size_are_derived_from_onnx(tmp_path: Path) -> None:
    registry = load(write_repository(tmp_path, {"m": None}))
    version = registry.resolve("m")
    assert [(s.name, s.datatype, s.shape) for s in version.inputs] == [("x", "FP32", (-1, 4))]
    assert [s.name for s in version.outputs] == ["y", "label"]
    assert version.max_batch_size == 32 and version.runtime_name == "onnx"


def test_config_input_the_model_lacks_is_a_clear_error(tmp_path: Path) -> None:
    config = "inputs: [{name: pixels, datatype: FP32, shape: [-1, 4]}]\n"
    registry = load(write_repository(tmp_path, {"m": config}))
    assert "the model has no input named pixels" in registry.index()[0]["reason"]


def test_version_policy_default_version_and_resolution(tmp_path: Path) -> None:
    for version in (1, 2, 3):
        write_onnx_model(tmp_path / "m" / str(version), np.full((4, 3), version, dtype=np.float32))
    (tmp_path / "m" / "config.yaml").write_text("version_policy: {latest: 2}\ndefault_version: 2\n")
    registry = load(tmp_path)
    assert registry.resolve("m").version == 2
    assert registry.resolve("m", "3").version == 3
    with pytest.raises(ModelNotFound, match="has no version '1'"):
        registry.resolve("m", "1")
    with pytest.raises(ModelNotFound, match="has no version 'latest'"):
        registry.resolve("m", "latest")
    with pytest.raises(ModelNotFound, match="unknown model 'other'"):
        registry.resolve("other")


def test_unload_then_load_again(tmp_path: Path) -> None:
    registry = Registry(write_repository(tmp_path, {"m": None}))

    async def cycle() -> None:
        await registry.load_all()
        await registry.unload("m")
        with pytest.raises(ModelNotReady, match="unloaded"):
            registry.resolve("m")
        await registry.load("m")
        assert registry.resolve("m").version == 1
        with pytest.raises(ModelNotFound):
            await registry.load("missing")
        await registry.close()

    asyncio.run(cycle())


# -- reloads, version swaps, overrides -------------------------------------------------------------------

VERSIONED_HANDLER = """
import numpy as np

from servekit import BaseHandler
""" + GATE_HANDLER_CODE + """

class Versioned(BaseHandler):
    def inference(self, data):
        wait_at_gate(self.context.parameters.get("gate"), data["x"][:, 0])
        return {"v": np.full((len(data["x"]), 1), self.context.version, dtype=np.int64)}
"""


async def until(check: Callable[[], object], what: str, timeout_s: float = 30.0) -> None:
    """Wait (without blocking the loop) until ``check()`` is true."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


def refused_as_not_ready(registry: Registry, reason: str) -> bool:
    try:
        registry.resolve("m")
    except ModelNotReady as exc:
        return reason in str(exc)
    return False


def write_versioned(root: Path, versions: tuple[int, ...], config: str = "", name: str = "m") -> Path:
    """A handler model answering each row with the version that ran it."""
    model = root / name
    model.mkdir(parents=True, exist_ok=True)
    (model / "handler.py").write_text(VERSIONED_HANDLER)
    (model / "config.yaml").write_text("inputs: [{name: x, datatype: FP32, shape: [-1, 1]}]\n"
                                       "outputs: [{name: v, datatype: INT64, shape: [-1, 1]}]\n" + config)
    for version in versions:
        (model / str(version)).mkdir(exist_ok=True)
    return model


async def answer(registry: Registry, version: str | None = None, key: str | None = None) -> int:
    chosen = registry.route("m", version, key)
    outputs = await chosen.batcher.submit({"x": np.zeros((1, 1), dtype=np.float32)})
    return int(outputs["v"][0, 0])


def test_unchanged_versions_are_kept_and_changed_ones_reload(tmp_path: Path) -> None:
    model = write_versioned(tmp_path, (1, 2), "version_policy: {all: true}\n")
    registry = Registry(tmp_path)

    async def run() -> None:
        await registry.load_all()
        first = dict(registry.entry("m").versions)
        await registry.load("m")
        assert registry.entry("m").versions == first  # the very same objects: nothing reloaded
        (model / "2" / "weights.bin").write_bytes(b"new")
        with (model / "config.yaml").open("a") as config:
            config.write("default_version: 1\n")  # a routing field: no reload
            config.write("ray: {num_replicas: 2}\n")  # only `servekit ray deploy` reads it: no reload
        await registry.load("m")
        after = registry.entry("m").versions
        assert after[1] is first[1] and after[2] is not first[2]
        assert first[2].state is LoadState.UNLOADING
        assert registry.resolve("m").version == 1
        await registry.close()

    asyncio.run(run())


def test_a_new_version_loads_while_the_old_one_serves_and_drains(tmp_path: Path) -> None:
    gate = Gate(tmp_path / "gate")
    model = write_versioned(tmp_path / "repo", (1,), f"parameters: {{gate: '{gate}'}}\n")
    registry = Registry(tmp_path / "repo")

    async def run() -> None:
        await registry.load_all()
        old = registry.resolve("m")
        in_flight = asyncio.create_task(answer(registry))
        await until(gate.batches, "version 1 computing")  # held at the gate
        (model / "2").mkdir()
        loading = asyncio.create_task(registry.load("m"))  # latest: 1 -> version 2 serves, version 1 drains
        await until(lambda: registry.resolve("m").version == 2, "version 2 serving")
        assert old.state is LoadState.UNLOADING
        assert not in_flight.done() and not loading.done()  # the load returns once version 1 has drained
        gate.open()
        assert await in_flight == 1
        await loading
        assert await answer(registry) == 2
        with pytest.raises(ModelNotFound, match="no version '1'"):
            registry.resolve("m", "1")
        await registry.close()

    asyncio.run(run())


def test_a_version_that_fails_to_load_never_takes_the_model_down(tmp_path: Path) -> None:
    model = write_versioned(tmp_path, (1,))
    registry = Registry(tmp_path)

    async def run() -> None:
        await registry.load_all()
        (model / "2").mkdir()
        (model / "handler.py").write_text("raise ImportError('broken')\n")
        await registry.load("m")
        entry = registry.entry("m")
        assert 2 in entry.failed_versions and "broken" in entry.failed_versions[2]
        assert await answer(registry) == 1  # version 1 serves on
        assert "kept serving" in entry.stale[1]
        await registry.close()

    asyncio.run(run())


def test_traffic_split_default_version_and_scaling(tmp_path: Path) -> None:
    write_versioned(tmp_path, (1, 2), "version_policy: {all: true}\ntraffic: {1: 1, 2: 3}\n")
    registry = Registry(tmp_path)

    async def run() -> None:
        await registry.load_all()
        seen = {await answer(registry, key=f"user-{n}") for n in range(40)}
        assert seen == {1, 2}
        assert {await answer(registry, key="alice") for _ in range(10)} == {await answer(registry, key="alice")}
        assert await answer(registry, "1") == 1  # a named version ignores the split
        registry.set_traffic("m", {2: 1})
        assert {await answer(registry, key=f"user-{n}") for n in range(20)} == {2}
        with pytest.raises(ModelNotFound, match="no version '5'"):
            registry.set_traffic("m", {5: 1})
        registry.set_default("m", 1)  # clears the split: everything to version 1
        assert {await answer(registry, key=f"user-{n}") for n in range(20)} == {1}
        before = registry.entry("m").versions[1]
        await registry.scale("m", 2)
        after = registry.entry("m").versions[1]
        assert after is not before and after.batcher.instance_count == 2
        await registry.load("m")  # the override survives a reload from disk, and nothing reloads
        assert registry.entry("m").versions[1] is after
        assert registry.resolve("m").version == 1
        await registry.close()

    asyncio.run(run())


def test_remove_answers_503_while_draining_then_404(tmp_path: Path) -> None:
    gate = Gate(tmp_path / "gate")
    write_versioned(tmp_path / "repo", (1,), f"parameters: {{gate: '{gate}'}}\n")
    registry = Registry(tmp_path / "repo")

    async def run() -> None:
        await registry.load_all()
        in_flight = asyncio.create_task(answer(registry))
        await until(gate.batches, "the request computing")
        removing = asyncio.create_task(registry.remove("m", reason="being unregistered"))
        await until(lambda: refused_as_not_ready(registry, "being unregistered"), "503 while draining")
        assert not removing.done()  # it waits for the request in flight
        gate.open()
        assert await in_flight == 1
        await removing
        with pytest.raises(ModelNotFound):
            registry.resolve("m")

    asyncio.run(run())


def test_model_names_must_be_plain_folder_names(tmp_path: Path) -> None:
    write_repository(tmp_path / "repo", {"m": None})
    registry = Registry(tmp_path / "repo")
    for name in ("..", ".", "../repo", ".servekit", "_private"):
        with pytest.raises(ModelNotFound):
            asyncio.run(registry.load(name))


def test_a_separate_model_store_is_served_too(tmp_path: Path) -> None:
    write_repository(tmp_path / "repo", {"a": None, "both": None})
    write_repository(tmp_path / "store", {"b": None, "both": "max_batch_size: 2\n"})
    (tmp_path / "store" / ".servekit").mkdir()  # the store's own work folder is never a model
    registry = Registry(tmp_path / "repo", store=tmp_path / "store")
    assert registry.discover() == ["a", "b", "both"]
    assert registry.model_dir("both") == tmp_path / "repo" / "both"  # the repository wins a name
    asyncio.run(registry.load_all())
    assert registry.resolve("b").version == 1 and registry.resolve("both").max_batch_size == 32


def test_each_load_of_a_version_is_a_new_generation_and_a_kept_one_keeps_its_own(tmp_path: Path) -> None:
    # Generations count loads per model name and version in this process: names no other test uses.
    gen, other = f"gen{uuid.uuid4().hex[:8]}", f"other{uuid.uuid4().hex[:8]}"
    write_repository(tmp_path, {gen: None, other: None})

    async def body() -> list[int]:
        registry = Registry(tmp_path)
        await registry.load_all()
        first = registry.resolve(gen)
        await registry.load(gen)  # nothing changed on disk: the same loaded copy serves on
        assert registry.resolve(gen) is first
        write_onnx_model(tmp_path / gen / "1", np.full((4, 3), 7, dtype=np.float32))
        await registry.load(gen)
        generations = [first.generation, registry.resolve(gen).generation, registry.resolve(other).generation]
        await registry.close()
        return generations

    assert asyncio.run(body()) == [1, 2, 1]


def test_a_version_is_named_by_its_label_first_then_its_number() -> None:
    from types import SimpleNamespace
    from typing import Any

    from servekit.serving.entry import ModelEntry

    entry = ModelEntry("m", Path("m"))
    versions: dict[int, Any] = {1: SimpleNamespace(label="3"), 2: SimpleNamespace(label="1.0")}
    entry.versions = versions
    entry.failed_versions = {4: "broken"}
    assert [entry.version_number(text) for text in ("3", "1.0", "1", "2", "4", "9", "2.0")] == [
        1, 2, 1, 2, 4, None, None]


CRASHING_HANDLER = '''
import os

from servekit import BaseHandler


class Crashes(BaseHandler):
    def inference(self, data):
        if (data["x"] < 0).any():
            os._exit(1)
        return {"y": data["x"] * 2}
'''


def test_a_model_whose_process_crashes_too_often_is_down_until_loaded_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from servekit.runtimes import isolated

    fast = isolated.RestartPolicy(delays_s=(0.0,), max_crashes=2, window_s=600.0)
    monkeypatch.setattr(isolated, "RestartPolicy", lambda: fast)  # what load_version's instances get
    model_dir = tmp_path / "crashy"
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "handler.py").write_text(CRASHING_HANDLER)
    (model_dir / "config.yaml").write_text("isolation: process\nmax_batch_size: 4\n"
                                           "inputs: [{name: x, datatype: FP32, shape: [-1, 1]}]\n"
                                           "outputs: [{name: y, datatype: FP32, shape: [-1, 1]}]\n")
    registry = Registry(tmp_path)

    async def run() -> None:
        await registry.load_all()
        batcher = registry.resolve("crashy").batcher
        for _ in range(2):
            with pytest.raises(ModelFailed, match="the model's process exited with code 1"):
                await batcher.submit({"x": np.array([[-1.0]], dtype=np.float32)})
        [row] = registry.index()
        assert row["state"] == "UNAVAILABLE" and "crashed 2 times" in row["reason"]
        with pytest.raises(ModelNotReady, match="crashed 2 times"):
            registry.resolve("crashy")
        await registry.load("crashy")  # loaded again: a fresh version, with fresh processes
        answer = await registry.resolve("crashy").batcher.submit({"x": np.array([[2.0]], dtype=np.float32)})
        assert answer["y"].tolist() == [[4.0]] and registry.index()[0]["state"] == "READY"
        await registry.close()

    asyncio.run(run())
