"""servekit convert: PyTorch (nn.Module, TorchScript, torch.export) and scikit-learn to a served ONNX version."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from click.testing import CliRunner

from servekit.cli import main
from servekit.config import parse_model_config
from tests.conftest import TORCH_INSTALL, require_module

from .models import serve_once, write_pickled_torch_model, write_sklearn_classifier, write_torch_models

if TYPE_CHECKING:
    import torch
else:
    torch = require_module("torch", TORCH_INSTALL)


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_torch_models(tmp_path_factory.mktemp("sources"))


def _convert(*args: str) -> str:
    result = CliRunner().invoke(main, ["convert", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _eager(sources: dict[str, Path], rows: np.ndarray) -> dict[str, np.ndarray]:
    import importlib.util

    spec = importlib.util.spec_from_file_location("tiny_net_reference", sources["net.py"])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    net = module.TinyNet().eval()
    with torch.inference_mode():
        return {name: value.numpy() for name, value in net(torch.from_numpy(rows)).items()}


def test_module_from_a_file_converts_and_serves(sources: dict[str, Path], tmp_path: Path) -> None:
    output = _convert(str(sources["net.py"]), "--module", f"{sources['net.py']}:TinyNet", "--input-shape", "1,8",
                      "-o", str(tmp_path / "repo" / "tiny"))
    assert "[2/5] export to ONNX done" in output and "scores: max abs error" in output
    assert "label: 0 of" in output
    assert (tmp_path / "repo" / "tiny" / "1" / "model.onnx").is_file()
    config = parse_model_config((tmp_path / "repo" / "tiny" / "config.yaml").read_text(), "config.yaml")
    assert config.runtime == "onnx" and config.max_batch_size == 32 and config.batching.enabled
    assert [(t.name, t.datatype, t.shape) for t in config.inputs or []] == [("features", "FP32", [-1, 8])]
    assert [(t.name, t.datatype, t.shape) for t in config.outputs or []] == [
        ("scores", "FP32", [-1, 3]), ("label", "INT64", [-1])]
    rows = np.random.default_rng(5).standard_normal((5, 8)).astype(np.float32)  # 5 rows: the batch is dynamic
    served = serve_once(tmp_path / "repo", "tiny", {"features": rows})
    expected = _eager(sources, rows)
    np.testing.assert_allclose(served["scores"], expected["scores"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(served["label"], expected["label"])


def test_state_dict_and_export_program_become_versions(sources: dict[str, Path], tmp_path: Path) -> None:
    """A state dict loaded into the --module class, then a .pt2 as version 7 (TorchScript: see test_readme_toolkit)."""
    model_dir = tmp_path / "repo" / "tiny"
    _convert(str(sources["weights.pt"]), "--module", f"{sources['net.py']}:TinyNet", "--input-shape", "1,8",
             "-o", str(model_dir))
    exported = _convert(str(sources["model.pt2"]), "-o", str(model_dir), "--version", "7")
    assert "torch.export" in exported and "kept" in exported  # config.yaml of version 1 is kept
    assert sorted(p.name for p in model_dir.iterdir()) == ["1", "7", "config.yaml"]
    rows = np.random.default_rng(6).standard_normal((3, 8)).astype(np.float32)
    expected = _eager(sources, rows)
    for version in ("1", "7"):
        (model_dir / "config.yaml").write_text(f"version_policy: {{specific: [{version}]}}\n")
        served = serve_once(tmp_path / "repo", "tiny", {"features": rows})
        np.testing.assert_allclose(served["scores"], expected["scores"], rtol=1e-5, atol=1e-6, err_msg=version)


def test_sklearn_classifier_converts_with_the_sklearn_runtime_names(tmp_path: Path) -> None:
    estimator = write_sklearn_classifier(tmp_path / "clf.skops")
    _convert(str(tmp_path / "clf.skops"), "-o", str(tmp_path / "repo" / "clf"))
    config = parse_model_config((tmp_path / "repo" / "clf" / "config.yaml").read_text(), "config.yaml")
    assert [t.name for t in config.outputs or []] == ["label", "probabilities"]
    assert config.simple.prediction_output == "label" and config.simple.probability_output == "probabilities"
    rows = np.random.default_rng(7).standard_normal((4, 5)).astype(np.float32)
    served = serve_once(tmp_path / "repo", "clf", {"input": rows})
    np.testing.assert_array_equal(served["label"], estimator.predict(rows))
    np.testing.assert_allclose(served["probabilities"], estimator.predict_proba(rows), rtol=1e-4, atol=1e-5)


def test_parity_failure_exits_non_zero_and_writes_nothing(sources: dict[str, Path], tmp_path: Path) -> None:
    destination = tmp_path / "repo" / "drifts"
    np.save(tmp_path / "sample.npy", np.full((2, 4), 3.0, dtype=np.float32))
    result = CliRunner().invoke(main, ["convert", str(sources["drifting.py"]), "--module",
                                       f"{sources['drifting.py']}:Drifts", "--input-shape", "1,4",
                                       "--sample", str(tmp_path / "sample.npy"), "-o", str(destination)])
    assert result.exit_code == 1
    assert "parity check failed" in result.output and "--tolerance 0.0001" in result.output
    assert "on random inputs (1 row), random inputs (3 rows), --sample sample.npy" in result.output
    assert "output: max abs error 0.5, max rel error" in result.output and "nothing was written" in result.output
    assert not destination.exists()


@pytest.mark.parametrize(("args", "message"), [
    (["{net}"], "name the model with --module"),
    (["{net}", "--module", "{net}:TinyNet"], "give --input-shape"),
    (["{net}", "--module", "{net}:Missing", "--input-shape", "1,8"], "defines no class or function 'Missing'"),
    (["{net}", "--module", "{net}:TinyNet", "--input-shape", "1,x"], "expected comma-separated integers"),
    (["{pt}"], "give --input-shape"),
    (["{pt}", "--input-shape", "1,8", "--opset", "99"], "--opset 99 is newer than this environment supports"),
    (["{static}"], "was exported with a fixed batch (features [1, 8]); export it again"),
])
def test_clear_errors(sources: dict[str, Path], tmp_path: Path, args: list[str], message: str) -> None:
    filled = [a.format(net=sources["net.py"], pt=sources["model.pt"], static=sources["static.pt2"]) for a in args]
    result = CliRunner().invoke(main, ["convert", *filled, "-o", str(tmp_path / "m")])
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output


def test_existing_version_is_not_overwritten_without_asking(sources: dict[str, Path], tmp_path: Path) -> None:
    model_dir = tmp_path / "m"
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "1" / "model.onnx").write_bytes(b"old")
    result = CliRunner().invoke(main, ["convert", str(sources["model.pt2"]), "-o", str(model_dir), "--version", "1"])
    assert result.exit_code == 1 and "pass --overwrite" in result.output
    assert (model_dir / "1" / "model.onnx").read_bytes() == b"old"


def test_torchscript_falls_back_to_the_torchscript_based_exporter(sources: dict[str, Path], tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """When torch's TorchScript converter cannot read a module, the older exporter (opset <= 20) takes over."""
    import torch._export.converter

    class Unreadable:
        def __init__(self, *args: object) -> None:
            raise RuntimeError("cannot convert this TorchScript")

    monkeypatch.setattr(torch._export.converter, "TS2EPConverter", Unreadable)
    output = _convert(str(sources["scaled.pt"]), "--input-shape", "1,8", "-o", str(tmp_path / "repo" / "scaled"))
    assert "the TorchScript-based exporter, opset 20" in output and "output: max abs error" in output
    served = serve_once(tmp_path / "repo", "scaled", {"input": np.ones((4, 8), dtype=np.float32)})
    assert served["output"].shape == (4, 16)
    result = CliRunner().invoke(main, ["convert", str(sources["model.pt"]), "--input-shape", "1,8",
                                       "-o", str(tmp_path / "repo" / "dict")])
    assert result.exit_code == 1  # dict outputs: only the torch.export route can export them
    assert "TorchScript-based" in result.output and "the torch.export route failed too" in result.output


def test_a_pickled_module_converts_only_with_trust_pickle(tmp_path: Path) -> None:
    """torch.save(model, "model.pth"): refused without --trust-pickle; with it, ONNX that answers the same."""
    net = write_pickled_torch_model(tmp_path / "source")
    source = str(tmp_path / "source" / "1" / "model.pth")
    refused = CliRunner().invoke(main, ["convert", source, "--input-shape", "1,4", "-o", str(tmp_path / "repo" / "m")])
    assert refused.exit_code != 0
    assert "refusing to unpickle a whole PyTorch module" in refused.output and "--trust-pickle" in refused.output
    assert not (tmp_path / "repo").exists()
    output = _convert(source, "--trust-pickle", "--input-shape", "1,4", "-o", str(tmp_path / "repo" / "m"))
    assert "nn.Module" in output and (tmp_path / "repo" / "m" / "1" / "model.onnx").is_file()
    rows = np.random.default_rng(3).standard_normal((4, 4)).astype(np.float32)
    served = serve_once(tmp_path / "repo", "m", {"x": rows})
    with torch.inference_mode():
        expected = net(torch.from_numpy(rows)).numpy()
    np.testing.assert_allclose(served["y"], expected, rtol=1e-5, atol=1e-6)  # names: the config.yaml beside it
