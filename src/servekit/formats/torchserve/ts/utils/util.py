"""``ts.utils.util``: the helpers TorchServe handlers import (label maps, class discovery,
YAML reading, ``PredictionException``)."""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

__all__ = ["PredictionException", "get_yaml_config", "list_classes_from_module", "load_label_mapping",
           "map_class_to_label"]

log = logging.getLogger("servekit.torchserve")


class PredictionException(Exception):
    """Raised by a handler to fail its whole batch with ``error_code`` and ``message`` (not a 503)."""

    def __init__(self, message: str, error_code: int = 500) -> None:
        super().__init__(message)
        self.message = message
        self.error_code = error_code

    def __str__(self) -> str:
        return f"{self.message} : {self.error_code}"


def list_classes_from_module(module: ModuleType, parent_class: type | None = None) -> list[type]:
    """The classes defined in ``module`` itself (not imported into it), by name; only subclasses
    of ``parent_class`` when given."""
    found = [member for _, member in inspect.getmembers(module, inspect.isclass)
             if member.__module__ == module.__name__]
    if parent_class is not None:
        found = [cls for cls in found if issubclass(cls, parent_class)]
    return found


def load_label_mapping(mapping_file_path: str | Path) -> dict[str, str] | None:
    """``{"class id": "label"}`` from a JSON file, or None (with a warning) when there is no file.

    A list value stands for its last item; the older ``{"object_type_names": [...]}`` form is
    numbered from 0.
    """
    path = Path(mapping_file_path)
    if not path.is_file():
        log.warning("%s is missing: inference output will not include class names", path)
        return None
    mapping = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(mapping, dict):
        raise ValueError(f"{path}: expected a JSON object of class id -> label")
    names = mapping.get("object_type_names")
    if isinstance(names, list):
        return {str(index): str(name) for index, name in enumerate(names)}
    labels: dict[str, str] = {}
    for key, value in mapping.items():
        label = value[-1] if isinstance(value, list) and value else value
        if not isinstance(label, str):
            raise ValueError(f"{path}: label of {key!r} must be a string or a list of strings")
        labels[str(key)] = label
    return labels


def map_class_to_label(probs: Sequence[Sequence[Any]], mapping: Mapping[str, str] | None = None,
                       lbl_classes: Iterable[Iterable[Any]] | None = None) -> list[dict[str, Any]]:
    """One ``{label: probability}`` dict per row of ``probs``; labels come from ``mapping`` by
    class id (the class ids of each row: ``lbl_classes``, else 0, 1, ...), or are the ids as text."""
    if not isinstance(probs, list):
        raise TypeError("convert the probabilities to a list (tensor.tolist()) before mapping classes")
    if mapping is not None and not isinstance(mapping, Mapping):
        raise TypeError("mapping must be a dict of class id -> label")
    classes: Iterable[Iterable[Any]] = (lbl_classes if lbl_classes is not None
                                        else (range(len(row)) for row in probs))
    results = []
    for row_classes, row_probs in zip(classes, probs, strict=False):
        results.append({(mapping[str(c)] if mapping is not None else str(c)): p
                        for c, p in zip(row_classes, row_probs, strict=False)})
    return results


def get_yaml_config(yaml_file_path: str | Path) -> Any:
    """The parsed YAML file (``yaml.safe_load``)."""
    with open(yaml_file_path, encoding="utf-8") as source:
        return yaml.safe_load(source)
