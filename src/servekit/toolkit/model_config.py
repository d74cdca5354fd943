"""Writing a model's ``config.yaml``: readable YAML, validated before it touches the disk.

Pure apart from :func:`write_config`. Every file written is parsed back with
:func:`servekit.config.parse_model_config`, so the toolkit never writes a config the
server would refuse.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from servekit.config import ModelConfig, parse_model_config
from servekit.types import TensorSpec

__all__ = ["render_config", "tensor_entries", "write_config"]

_COMMENT_WIDTH = 100


def tensor_entries(specs: Sequence[TensorSpec]) -> list[dict[str, Any]]:
    return [{"name": spec.name, "datatype": spec.datatype, "shape": list(spec.shape)} for spec in specs]


def render_config(fields: dict[str, Any], comments: Sequence[str] = ()) -> str:
    """YAML text for ``fields`` (keys in the given order; each tensor on one line), headed by
    ``comments``. Raises ConfigError if the result is not a valid config.yaml."""
    lines = [f"# {line}".rstrip() for comment in comments
             for line in textwrap.wrap(comment, _COMMENT_WIDTH, subsequent_indent="    ", break_on_hyphens=False,
                                       drop_whitespace=False) or [""]]
    for key, value in fields.items():
        if key in ("inputs", "outputs"):
            lines.append(f"{key}:")
            lines.extend(f"  - {_flow(entry)}" for entry in value)
        else:
            lines.append(yaml.safe_dump({key: value}, sort_keys=False, default_flow_style=False).rstrip())
    text = "\n".join(lines) + "\n"
    parse_model_config(text, "config.yaml (generated)")
    return text


def write_config(path: Path, text: str) -> ModelConfig:
    """Write ``text`` to ``path`` (creating folders) and return it parsed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return parse_model_config(text, path)


def _flow(entry: dict[str, Any]) -> str:
    return yaml.safe_dump(entry, default_flow_style=True, sort_keys=False, width=1_000).strip()
