from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from servekit.errors import ModelNotFound, ModelNotReady
from servekit.serving.polling import RepositoryPoller
from servekit.serving.registry import Registry
from tests.builders import write_onnx_model, write_repository


def test_a_poll_loads_new_and_changed_models_and_forgets_removed_ones(tmp_path: Path) -> None:
    write_repository(tmp_path, {"a": None, "b": None})
    registry = Registry(tmp_path)

    async def run() -> None:
        await registry.load_all()
        poller = RepositoryPoller(registry, interval_s=3600)
        await poller.start()
        kept = registry.resolve("a")
        assert await poller.poll_once() == ([], [])

        staged = tmp_path / ".incoming"  # hidden: never seen as a model
        write_onnx_model(staged / "2", np.ones((4, 3), dtype=np.float32))
        (staged / "2").rename(tmp_path / "a" / "2")  # one rename: a poll sees all of it or none
        write_repository(tmp_path, {"c": None})
        shutil.rmtree(tmp_path / "b")
        assert await poller.poll_once() == (["a", "c"], ["b"])
        assert registry.resolve("a").version == 2 and kept.state.value == "UNLOADING"
        assert registry.resolve("c").version == 1
        with pytest.raises(ModelNotFound):
            registry.resolve("b")

        await registry.unload("c")  # unloaded on purpose: it stays so until its files change
        assert await poller.poll_once() == ([], [])
        await poller.stop()
        await registry.close()

    asyncio.run(run())


def test_polling_runs_in_the_background_until_stopped(tmp_path: Path) -> None:
    write_repository(tmp_path, {"a": None})
    registry = Registry(tmp_path)

    async def run() -> None:
        def ready(name: str) -> bool:
            try:
                registry.resolve(name)
            except (ModelNotFound, ModelNotReady):
                return False
            return True

        await registry.load_all()
        assert not ready("late")
        poller = RepositoryPoller(registry, interval_s=0.05)
        await poller.start()
        write_repository(tmp_path, {"late": None})
        deadline = time.monotonic() + 30  # a condition, not a head start: the load takes what it takes
        while not ready("late"):
            assert time.monotonic() < deadline, "the poller never loaded 'late'"
            await asyncio.sleep(0.01)
        assert registry.resolve("late").version == 1
        await poller.stop()
        await registry.close()

    asyncio.run(run())


def test_a_model_that_appears_during_start_up_is_loaded_by_the_first_poll(tmp_path: Path) -> None:
    write_repository(tmp_path, {"a": None})
    registry = Registry(tmp_path)

    async def run() -> None:
        await registry.load_all()
        write_repository(tmp_path, {"late": None})  # after start-up loaded, before polling starts
        poller = RepositoryPoller(registry, interval_s=3600)
        await poller.start()
        assert await poller.poll_once() == (["late"], [])
        assert registry.resolve("late").version == 1
        await poller.stop()
        await registry.close()

    asyncio.run(run())
