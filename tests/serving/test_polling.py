from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import numpy as np
import pytest

from servekit.errors import ModelNotFound
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
        await registry.load_all()
        poller = RepositoryPoller(registry, interval_s=0.05)
        await poller.start()
        write_repository(tmp_path, {"late": None})
        deadline = asyncio.get_running_loop().time() + 60  # generous: a shared machine may be slow
        while not ("late" in registry.model_names() and registry.entry("late").versions) \
                and asyncio.get_running_loop().time() < deadline:  # listed while loading: wait for its versions
            await asyncio.sleep(0.02)
        assert registry.resolve("late").version == 1
        await poller.stop()
        await registry.close()

    asyncio.run(run())
