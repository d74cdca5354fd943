"""ts.utils.util: label maps, class discovery, PredictionException."""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest

from servekit.formats.torchserve.ts.utils.util import (
    PredictionException,
    get_yaml_config,
    list_classes_from_module,
    load_label_mapping,
    map_class_to_label,
)


def test_label_mapping_forms(tmp_path: Path) -> None:
    assert load_label_mapping(tmp_path / "missing.json") is None
    (tmp_path / "plain.json").write_text(json.dumps({"0": "cat", "1": ["n02", "dog"]}))
    assert load_label_mapping(tmp_path / "plain.json") == {"0": "cat", "1": "dog"}
    (tmp_path / "old.json").write_text(json.dumps({"object_type_names": ["a", "b"]}))
    assert load_label_mapping(tmp_path / "old.json") == {"0": "a", "1": "b"}
    (tmp_path / "bad.json").write_text(json.dumps({"0": 3}))
    with pytest.raises(ValueError, match="string"):
        load_label_mapping(tmp_path / "bad.json")


def test_map_class_to_label() -> None:
    assert map_class_to_label([[0.1, 0.9]], {"0": "no", "1": "yes"}) == [{"no": 0.1, "yes": 0.9}]
    assert map_class_to_label([[0.9], [0.8]], None, [[3], [1]]) == [{"3": 0.9}, {"1": 0.8}]
    with pytest.raises(TypeError):
        map_class_to_label(((0.1,),))  # type: ignore[arg-type]


def test_classes_defined_in_the_module_only() -> None:
    module = types.ModuleType("handler_module")
    exec("from pathlib import Path\nclass A:\n    pass\nclass B(A):\n    pass\n", module.__dict__)
    assert [cls.__name__ for cls in list_classes_from_module(module)] == ["A", "B"]
    assert [cls.__name__ for cls in list_classes_from_module(module, module.B)] == ["B"]


def test_prediction_exception_and_yaml(tmp_path: Path) -> None:
    failure = PredictionException("bad input", 400)
    assert (failure.message, failure.error_code, str(failure)) == ("bad input", 400, "bad input : 400")
    (tmp_path / "c.yaml").write_text("a: 1\n")
    assert get_yaml_config(tmp_path / "c.yaml") == {"a": 1}
