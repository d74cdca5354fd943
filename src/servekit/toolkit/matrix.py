"""The static decision matrix behind ``servekit advise``, and what each pattern means in servekit.

The usual guidance scores four serving patterns 0-5 against seven requirements. servekit
offers every pattern as a per-model setting, so each pattern maps to settings (runtime,
protocol, batching, handler) rather than to a framework. These scores are guidance, not
measurements: ``servekit advise MODEL`` measures the runtimes, and ``servekit bench`` the
protocols, on the user's own model and machine. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from servekit.toolkit.errors import ToolkitError

__all__ = ["PATTERNS", "REQUIREMENTS", "Pattern", "parse_requirements", "rank_patterns"]

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


def parse_requirements(text: str | Iterable[str] | None) -> list[str]:
    """``"latency,throughput"`` -> canonical names, in the order given; ToolkitError on unknown ones."""
    parts = text.split(",") if isinstance(text, str) else list(text or [])
    chosen: list[str] = []
    for part in parts:
        name = part.strip().lower()
        if not name:
            continue
        name = _ALIASES.get(name, name)
        if name not in REQUIREMENTS:
            raise ToolkitError(f"--require {part.strip()!r}: expected some of {', '.join(REQUIREMENTS)}")
        if name not in chosen:
            chosen.append(name)
    return chosen


def rank_patterns(requirements: list[str]) -> list[tuple[Pattern, int]]:
    """Patterns by their summed score over ``requirements`` (all seven when empty), best first;
    ties keep the matrix's order."""
    considered = requirements or list(REQUIREMENTS)
    totals = [(pattern, sum(pattern.scores[name] for name in considered)) for pattern in PATTERNS]
    return sorted(totals, key=lambda item: -item[1])
