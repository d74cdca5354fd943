"""Traffic splits across the versions of one model (A/B tests, canaries). Pure: no I/O.

A split is a weight per version, e.g. ``{1: 90, 2: 10}``. A request that names no version
goes to one of the split's versions in proportion to the weights. With a routing key the
choice is sticky: the key is hashed (SHA-256, the same in every process and on every run),
so one key keeps landing on one version while the split and the set of ready versions stay
the same. Versions are laid out in ascending order on the weight line, so ramping the
newest version up only ever moves keys *to* it: a user already on the canary stays there.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Collection, Mapping
from typing import Any

from servekit.errors import InvalidInput
from servekit.types import is_decimal

__all__ = ["MAX_WEIGHT", "parse_split", "pick_version", "routing_key"]

MAX_WEIGHT = 1_000_000


def parse_split(document: object) -> dict[int, int]:
    """A split from its JSON form (``{"1": 90, "2": 10}``); an empty mapping clears a split.

    Guarantees: keys are version numbers (>= 1), weights are integers in [0, MAX_WEIGHT] and,
    unless the split is empty, at least one weight is positive. InvalidInput otherwise.
    """
    if not isinstance(document, Mapping):
        raise InvalidInput('a traffic split is a JSON object of version -> weight, e.g. {"1": 90, "2": 10}')
    split: dict[int, int] = {}
    for key, weight in document.items():
        text = str(key)
        if not is_decimal(text) or int(text) < 1:
            raise InvalidInput(f"traffic split: {key!r} is not a version number")
        if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= MAX_WEIGHT:
            raise InvalidInput(f"traffic split: the weight of version {text} must be an integer from 0 to {MAX_WEIGHT}")
        split[int(text)] = weight
    if split and not any(split.values()):
        raise InvalidInput("traffic split: at least one version needs a weight above 0")
    return split


def pick_version(split: Mapping[int, int], ready: Collection[int], key: str | None,
                 rng: random.Random | None = None) -> int | None:
    """The version one request goes to, or None when no version of the split is ready.

    Versions that are not ready (or have weight 0) are left out and the others share their
    traffic in proportion. ``key`` makes the choice deterministic; without one it is random.
    """
    live = sorted((version, weight) for version, weight in split.items() if weight > 0 and version in ready)
    if not live:
        return None
    total = sum(weight for _, weight in live)
    if key is None:
        point = (rng or random).randrange(total)
    else:
        point = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") % total
    for version, weight in live:
        if point < weight:
            return version
        point -= weight
    raise AssertionError("unreachable: point < total")  # pragma: no cover


def routing_key(parameters: Mapping[str, Any]) -> str | None:
    """The request's sticky routing key: the ``routing_key`` parameter (a string or an integer)."""
    key = parameters.get("routing_key")
    if key is None:
        return None
    if isinstance(key, bool) or not isinstance(key, str | int) or key == "":
        raise InvalidInput("parameter 'routing_key' must be a non-empty string or an integer")
    return str(key)
