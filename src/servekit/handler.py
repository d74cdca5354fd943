"""The custom handler API: plain Python hooks that see a whole batch.

The hooks read as the pipeline, TorchServe-style::

    initialize(context) -> preprocess(inputs) -> inference(data) -> postprocess(data)

``inputs`` maps each declared input name to a numpy array whose first axis is the
batch; ``postprocess`` returns one array per declared output, with as many rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["BaseHandler", "HandlerContext"]


@dataclass(frozen=True, slots=True)
class HandlerContext:
    model_name: str
    version: int
    model_dir: Path
    version_dir: Path
    device: str
    parameters: dict[str, Any] = field(default_factory=dict)


class BaseHandler:
    """Subclass this in ``handler.py`` in the model folder and override what you need."""

    context: HandlerContext

    def initialize(self, context: HandlerContext) -> None:
        """Called once per instance, before any batch: load weights here."""
        self.context = context

    def preprocess(self, inputs: dict[str, np.ndarray[Any, Any]]) -> Any:
        return inputs

    def inference(self, data: Any) -> Any:
        raise NotImplementedError("a handler must implement inference()")

    def postprocess(self, data: Any) -> dict[str, np.ndarray[Any, Any]]:
        return data  # type: ignore[no-any-return]

    def handle(self, inputs: dict[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
        """Run the three batch hooks in order; override only to change the pipeline itself."""
        return self.postprocess(self.inference(self.preprocess(inputs)))
