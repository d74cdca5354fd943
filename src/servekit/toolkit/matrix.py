"""The static decision matrix behind ``servekit advise``, and what each pattern means in servekit.

The usual guidance scores four serving patterns 0-5 against seven requirements. servekit
offers every pattern as a per-model setting, so each pattern maps to settings (runtime,
protocol, batching, handler) rather than to a framework. These scores are guidance, not
measurements: ``servekit advise MODEL`` measures the runtimes, and ``servekit bench`` the
protocols, on the user's own model and machine. Pure: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from servekit.toolkit.errors import ToolkitError

__all__ = ["PATTERNS", "REQUIREMENTS", "Pattern", "Requirements", "parse_requirements", "rank_patterns"]

# requirement -> its weight (> 0; 1 unless given), in the order the user gave them.
Requirements = dict[str, float]

# requirement -> what it means, in the words of the matrix
REQUIREMENTS: dict[str, str] = {
    "flexibility": "custom pre/post-processing",
    "batteries": "batteries included (archives, management, metrics)",
    "latency": "low latency (< 10 ms)",
    "cross-framework": "several frameworks, clients in any language",
    "edge": "edge deployment",
    "debugging": "ease of debugging",
    "throughput": "high throughput (> 1000 req/s)",
}
_ALIASES = {
    "low-latency": "latency", "high-throughput": "throughput", "cross_framework": "cross-framework",
    "crossframework": "cross-framework", "portability": "cross-framework", "debug": "debugging",
    "batteries-included": "batteries", "custom": "flexibility", "flexible": "flexibility",
}


@dataclass(frozen=True, slots=True)
class Pattern:
    name: str
    scores: dict[str, int]  # requirement -> 0..5
    servekit: str  # the settings that give this pattern in servekit


PATTERNS: tuple[Pattern, ...] = (
    Pattern("FastAPI-style", dict(zip(REQUIREMENTS, (5, 2, 3, 4, 2, 5, 3), strict=True)),
            "the simple JSON API (POST /predict) with a custom handler.py (runtime: python)"),
    Pattern("TorchServe-style", dict(zip(REQUIREMENTS, (3, 5, 4, 1, 2, 3, 5), strict=True)),
            "a handler or framework runtime with dynamic batching, model archives, the management API"),
    Pattern("gRPC transport", dict(zip(REQUIREMENTS, (4, 2, 5, 4, 3, 2, 5), strict=True)),
            "gRPC (inference.GRPCInferenceService, or modelserving.ModelService) on --grpc-port"),
    Pattern("ONNX Runtime", dict(zip(REQUIREMENTS, (3, 3, 5, 5, 5, 2, 4), strict=True)),
            "runtime: onnx (servekit convert turns PyTorch and scikit-learn models into ONNX)"),
)


def parse_requirements(text: str | Iterable[str] | None) -> Requirements:
    """``"latency=2,throughput"`` -> ``{"latency": 2.0, "throughput": 1.0}``: canonical names (aliases,
    case, ``_`` for ``-`` accepted) with their weights (default 1), in the order given. A name given
    twice keeps one entry; ToolkitError on an unknown name, a weight that is not a positive number, or
    one name given two different weights."""
    parts = text.split(",") if isinstance(text, str) else list(text or [])
    chosen: Requirements = {}
    for part in parts:
        raw_name, has_weight, raw_weight = part.partition("=")
        name = raw_name.strip().lower().replace("_", "-")
        if not name:
            if has_weight:
                raise ToolkitError(f"--require {part.strip()!r}: a weight needs a requirement before the '='")
            continue
        name = _ALIASES.get(name, name)
        if name not in REQUIREMENTS:
            raise ToolkitError(f"--require {raw_name.strip()!r}: expected some of {', '.join(REQUIREMENTS)}"
                               " (each optionally NAME=WEIGHT)")
        weight = _weight(part, raw_weight) if has_weight else 1.0
        if chosen.get(name, weight) != weight:
            raise ToolkitError(f"--require: {name} is given twice, with weights {chosen[name]:g} and {weight:g}")
        chosen[name] = weight
    return chosen


def _weight(part: str, text: str) -> float:
    try:
        weight = float(text)
    except ValueError:
        weight = math.nan
    if not (math.isfinite(weight) and weight > 0):
        raise ToolkitError(f"--require {part.strip()!r}: the weight must be a number above 0, not {text.strip()!r}")
    return weight


def rank_patterns(requirements: Mapping[str, float] | Iterable[str]) -> list[tuple[Pattern, float]]:
    """Patterns by their weighted sum of scores over ``requirements`` (name -> weight; a plain list of
    names weighs each 1; all seven at weight 1 when empty), best first; ties keep the matrix's order."""
    weights = dict(requirements) if isinstance(requirements, Mapping) else dict.fromkeys(requirements, 1.0)
    considered = weights or dict.fromkeys(REQUIREMENTS, 1.0)
    totals = [(pattern, sum(pattern.scores[name] * weight for name, weight in considered.items()))
              for pattern in PATTERNS]
    return sorted(totals, key=lambda item: -item[1])
