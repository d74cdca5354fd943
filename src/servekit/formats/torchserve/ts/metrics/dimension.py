"""``ts.metrics.dimension.Dimension``: a name and value that labels a metric."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Dimension"]


@dataclass(frozen=True, slots=True)
class Dimension:
    name: str
    value: str

    def __str__(self) -> str:
        return f"{self.name}:{self.value}"
