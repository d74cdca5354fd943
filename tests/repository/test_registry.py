from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from servekit.errors import ModelNotFound, ModelNotReady
from servekit.repository.registry import Registry
from tests.builders import write_onnx_model, write_repository


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
    assert str(tmp_path / "bad" / "config.yaml") in rows["bad"]["reason"]
    assert "max_batch_size" in rows["bad"]["reason"]
    assert "no numbered version folders" in rows["empty"]["reason"]
    with pytest.raises(ModelNotReady, match="max_batch_size"):
        registry.resolve("bad")


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
