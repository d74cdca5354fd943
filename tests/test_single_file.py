"""servekit.single_file: a model file or handler checked and laid out as a one-model repository."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from servekit.config import ModelConfig, TensorConfig
from servekit.errors import ConfigError
from servekit.serving.entry import read_model_config
from servekit.single_file import is_single_model, parse_tensor, remove, single_model, write_repository


def test_parse_tensor() -> None:
    assert parse_tensor("x:fp32:-1,4") == TensorConfig(name="x", datatype="FP32", shape=[-1, 4])
    for bad, message in [("x:FP32", "expected NAME:DATATYPE:DIMS"), ("x:FP32:a,4", "comma-separated integers"),
                         ("x:FLOAT:-1", "unknown datatype"), ("x:FP32:0", "positive, or -1")]:
        with pytest.raises(ConfigError, match=message):
            parse_tensor(bad)


def test_what_counts_as_a_single_model(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"")
    assert is_single_model(tmp_path / "model.onnx")
    assert is_single_model("handler.py") and is_single_model("handler.py:MyHandler")
    assert is_single_model(tmp_path / "absent.skops")  # to be refused as missing, not as a repository
    assert not is_single_model(tmp_path)
    assert not is_single_model(tmp_path / "models")
    assert not is_single_model("handler.py:not a class")


def test_a_model_file_becomes_a_linked_one_model_repository(tmp_path: Path) -> None:
    source = tmp_path / "scorer.v2.onnx"
    source.write_bytes(b"onnx bytes")
    model = single_model(source, max_batch_size=4, instances=2)
    assert (model.name, model.runtime) == ("scorer", "onnx")
    root = write_repository(model, tmp_path)
    try:
        linked = root / "scorer" / "1" / "scorer.v2.onnx"
        assert linked.is_symlink() and linked.read_bytes() == b"onnx bytes"
        config = read_model_config(root / "scorer")
        assert (config.runtime, config.max_batch_size, config.instances) == ("onnx", 4, 2)
    finally:
        remove(root)
    assert not root.exists() and source.read_bytes() == b"onnx bytes"


def test_a_handler_is_named_by_its_absolute_path_and_needs_its_tensors(tmp_path: Path) -> None:
    (tmp_path / "code.py").write_text("", encoding="utf-8")
    with pytest.raises(ConfigError, match="a handler cannot describe its tensors"):
        single_model(f"{tmp_path / 'code.py'}:Mine")
    x, y = parse_tensor("x:FP32:-1,2"), parse_tensor("y:INT64:-1")
    model = single_model(f"{tmp_path / 'code.py'}:Mine", name="mine", inputs=[x], outputs=[y])
    root = write_repository(model, tmp_path)
    try:
        written = yaml.safe_load((root / "mine" / "config.yaml").read_text())
        assert written["handler"] == f"{(tmp_path / 'code.py').resolve()}:Mine"
        assert ModelConfig.model_validate(written).inputs == [x]
        assert [path.name for path in (root / "mine" / "1").iterdir()] == []
    finally:
        remove(root)


@pytest.mark.parametrize(("source", "options", "message"), [
    ("weights.bin", {}, r"weights.bin is not a folder \(a model repository\), nor a model file servekit serves"),
    ("absent.onnx", {}, "no such file"),
    ("model.pt", {}, "a TorchScript file cannot describe its tensors"),
    ("model.onnx", {"name": "_private"}, "is not a model name"),
    ("model.onnx", {"max_batch_size": -1}, "max_batch_size: Input should be greater than or equal to 0"),
])
def test_bad_single_models_are_one_line_errors(tmp_path: Path, source: str, options: dict[str, object],
                                               message: str) -> None:
    for name in ("weights.bin", "model.pt", "model.onnx"):
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(ConfigError, match=message):
        single_model(tmp_path / source, **options)  # type: ignore[arg-type]
