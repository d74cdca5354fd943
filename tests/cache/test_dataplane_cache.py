"""The cache in the data plane: opt-in per model, hits skip the model, reloads never see old answers."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from servekit.cache import MemoryBackend, ResponseCache
from servekit.cache.response import CacheBackend
from servekit.serving.dataplane import DataPlane
from servekit.serving.registry import Registry
from servekit.types import InferenceRequest, Tensor

CONFIG = """
inputs: [{name: x, datatype: FP32, shape: [-1, 2]}]
outputs: [{name: y, datatype: FP32, shape: [-1, 2]}]
cache: {enabled: %s, ttl_s: 60}
"""
HANDLER = """
from servekit import BaseHandler

class Scale(BaseHandler):
    def inference(self, inputs):
        return {"y": inputs["x"] * %s}
"""


def _write_model(root: Path, name: str, scale: float, cached: bool = True) -> None:
    (root / name / "1").mkdir(parents=True, exist_ok=True)
    (root / name / "config.yaml").write_text(CONFIG % ("true" if cached else "false"))
    handler = root / name / "handler.py"
    handler.write_text(HANDLER % scale)
    if cached:  # a different mtime, even on coarse clocks, so the registry sees the change
        stamp = handler.stat().st_mtime_ns + int(scale * 1e9)
        os.utime(handler, ns=(stamp, stamp))


def _request(name: str, *values: float) -> InferenceRequest:
    x = np.array([values], dtype=np.float32)
    return InferenceRequest(name, [Tensor("x", "FP32", x.shape, x)])


async def _y(plane: DataPlane, name: str, *values: float) -> list[float]:
    response = await plane.infer(_request(name, *values))
    result: list[float] = response.outputs[0].data.ravel().tolist()
    return result


def _batches(plane: DataPlane, name: str) -> int:
    [stats] = plane.model_statistics(name, "1")["model_stats"]
    count: int = stats["execution_count"]
    return count


def test_a_hit_answers_without_running_the_model(tmp_path: Path) -> None:
    _write_model(tmp_path, "cached", 2)
    _write_model(tmp_path, "plain", 2, cached=False)

    async def body() -> None:
        registry = Registry(tmp_path)
        plane = DataPlane(registry, cache=ResponseCache(MemoryBackend(1 << 20)))
        await registry.load_all()
        assert await _y(plane, "cached", 1, 2) == [2, 4]
        assert await _y(plane, "cached", 1, 2) == [2, 4]
        assert _batches(plane, "cached") == 1
        assert await _y(plane, "cached", 1, 3) == [2, 6]  # other inputs: a miss
        assert _batches(plane, "cached") == 2
        [stats] = plane.model_statistics("cached", "1")["model_stats"]
        assert stats["inference_stats"]["cache_hit"]["count"] == 1  # Triton's statistics extension
        assert stats["inference_stats"]["cache_miss"]["count"] == 2
        assert await _y(plane, "plain", 1, 2) == [2, 4]
        assert await _y(plane, "plain", 1, 2) == [2, 4]
        assert _batches(plane, "plain") == 2  # no cache unless the model asks for one
        await registry.close()

    asyncio.run(body())


def test_a_reloaded_version_never_answers_from_the_copy_it_replaced(tmp_path: Path) -> None:
    _write_model(tmp_path, "cached", 2)

    async def body() -> None:
        registry = Registry(tmp_path)
        plane = DataPlane(registry, cache=ResponseCache(MemoryBackend(1 << 20)))
        await registry.load_all()
        assert await _y(plane, "cached", 1, 2) == [2, 4]
        _write_model(tmp_path, "cached", 10)  # same version number, new files
        await registry.load("cached")
        assert await _y(plane, "cached", 1, 2) == [10, 20]
        await registry.unload("cached")
        _write_model(tmp_path, "cached", 3)
        await registry.load("cached")
        assert await _y(plane, "cached", 1, 2) == [3, 6]
        await registry.close()

    asyncio.run(body())


class _Broken:
    name = "broken"
    remote = False

    async def get(self, key: bytes) -> bytes | None:
        raise ConnectionError("down")

    async def set(self, key: bytes, value: bytes, ttl_s: float | None) -> None:
        raise ConnectionError("down")

    async def close(self) -> None:
        pass


def test_a_failing_cache_is_a_miss_and_is_logged_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _write_model(tmp_path, "cached", 2)
    backend: CacheBackend = _Broken()

    async def body() -> list[Any]:
        registry = Registry(tmp_path)
        plane = DataPlane(registry, cache=ResponseCache(backend))
        await registry.load_all()
        answers = [await _y(plane, "cached", 1, 2) for _ in range(3)]
        await registry.close()
        return answers

    logger = logging.getLogger("servekit.cache")
    logger.addHandler(caplog.handler)  # whether or not "servekit" propagates to the root logger
    try:
        assert asyncio.run(body()) == [[2, 4]] * 3
    finally:
        logger.removeHandler(caplog.handler)
    warnings = list({id(r): r for r in caplog.records if r.name == "servekit.cache"}.values())
    assert len(warnings) == 1 and "ConnectionError: down" in warnings[0].getMessage()
