"""The demo repository: every model serves the same MLP, from raw pixel rows."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_digits

from servekit.config import parse_model_config
from servekit.demo import write_demo_repository
from servekit.runtimes import Runtime, RuntimeContext, create_runtime, detect_runtime
from servekit.types import TensorSpec

HAS_TORCH = importlib.util.find_spec("torch") is not None
ROWS = 50


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    assert write_demo_repository(root) == ["digits", "digits_sklearn", "digits_handler"]
    return root


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    pixels, labels = load_digits(return_X_y=True)
    return pixels[:ROWS].astype(np.float32), labels[:ROWS]


def _load(root: Path, name: str, version: int) -> Runtime:
    model_dir = root / name
    config = parse_model_config((model_dir / "config.yaml").read_text(), model_dir / "config.yaml")
    version_dir = model_dir / str(version)
    runtime_name = config.runtime or detect_runtime(version_dir, has_handler=config.handler is not None)
    runtime = create_runtime(runtime_name, RuntimeContext(name, version, model_dir, version_dir, config=config))
    runtime.load()
    return runtime


def _served_versions() -> list[tuple[str, int]]:
    versions = [("digits", 1), ("digits_sklearn", 1), ("digits_handler", 1)]
    return [*versions, ("digits", 2)] if HAS_TORCH else versions


def test_files_and_configs(repository: Path) -> None:
    expected = [
        "digits/1/model.onnx",
        "digits_sklearn/1/model.skops",
        "digits_handler/handler.py",
        "digits_handler/1/weights.npz",
    ]
    for relative in expected + (["digits/2/model.pt"] if HAS_TORCH else []):
        assert (repository / relative).is_file(), relative
    digits_config = parse_model_config((repository / "digits" / "config.yaml").read_text(), "digits")
    assert digits_config.version_policy.select([1, 2]) == [1, 2]
    assert digits_config.default_version == 1
    assert digits_config.max_batch_size == 32
    assert digits_config.batching.max_queue_delay_ms == 2
    assert [t.spec() for t in digits_config.inputs or []] == [TensorSpec("input", "FP32", (-1, 64))]
    assert [t.name for t in digits_config.outputs or []] == ["probabilities", "label"]
    assert parse_model_config((repository / "digits_sklearn" / "config.yaml").read_text(), "s").runtime == "sklearn"
    assert parse_model_config((repository / "digits_handler" / "config.yaml").read_text(), "h").handler == "handler.py"


def test_onnx_and_sklearn_signatures_match_the_declared_contract(repository: Path) -> None:
    contract = (
        (TensorSpec("input", "FP32", (-1, 64)),),
        {TensorSpec("probabilities", "FP32", (-1, 10)), TensorSpec("label", "INT64", (-1,))},
    )
    for name in ("digits", "digits_sklearn"):
        signature = _load(repository, name, 1).signature()
        assert signature is not None
        assert (signature.inputs, set(signature.outputs)) == contract, name


@pytest.mark.parametrize(("name", "version"), _served_versions())
def test_every_model_is_accurate_on_raw_pixels(
    repository: Path, digits: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]], name: str, version: int
) -> None:
    pixels, labels = digits
    outputs = _load(repository, name, version).predict({"input": pixels})
    assert outputs["label"].dtype == np.int64 and outputs["label"].shape == (ROWS,)
    assert outputs["probabilities"].dtype == np.float32 and outputs["probabilities"].shape == (ROWS, 10)
    np.testing.assert_allclose(outputs["probabilities"].sum(axis=1), 1.0, rtol=1e-5)
    # These rows were in the training set: this checks the wiring (scale, weight layout), not generalisation.
    assert (outputs["label"] == labels).mean() > 0.9


def test_all_models_agree(repository: Path, digits: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]) -> None:
    pixels, _ = digits
    results = {
        f"{name}/{version}": _load(repository, name, version).predict({"input": pixels})
        for name, version in _served_versions()
    }
    reference = results.pop("digits/1")
    for key, outputs in results.items():
        np.testing.assert_array_equal(outputs["label"], reference["label"], err_msg=key)
        np.testing.assert_allclose(outputs["probabilities"], reference["probabilities"], atol=1e-5, err_msg=key)


def test_without_torch_there_is_no_version_two_and_output_is_deterministic(repository: Path, tmp_path: Path) -> None:
    assert write_demo_repository(tmp_path, include_torch=False) == ["digits", "digits_sklearn", "digits_handler"]
    assert not (tmp_path / "digits" / "2").exists()
    # Same seed, same data: byte-identical ONNX and identical handler weights.
    assert (tmp_path / "digits/1/model.onnx").read_bytes() == (repository / "digits/1/model.onnx").read_bytes()
    with (
        np.load(tmp_path / "digits_handler/1/weights.npz") as again,
        np.load(repository / "digits_handler/1/weights.npz") as first,
    ):
        for key in first.files:
            np.testing.assert_array_equal(again[key], first[key])
