from __future__ import annotations

import random
from collections import Counter

import pytest

from servekit.errors import InvalidInput
from servekit.serving.traffic import parse_split, pick_version, routing_key


def test_parse_split_reads_json_keys_and_refuses_nonsense() -> None:
    assert parse_split({"1": 90, "2": 10}) == {1: 90, 2: 10}
    assert parse_split({}) == {}
    for bad, message in [
        ([1, 2], "JSON object"),
        ({"one": 1}, "not a version number"),
        ({"0": 1}, "not a version number"),
        ({"1": -1}, "integer from 0"),
        ({"1": 1.5}, "integer from 0"),
        ({"1": True}, "integer from 0"),
        ({"1": 0, "2": 0}, "at least one version"),
    ]:
        with pytest.raises(InvalidInput, match=message):
            parse_split(bad)


def test_random_picks_follow_the_weights() -> None:
    rng = random.Random(7)
    counts = Counter(pick_version({1: 90, 2: 10}, {1, 2}, None, rng) for _ in range(20_000))
    assert 0.88 < counts[1] / 20_000 < 0.92


def test_a_routing_key_always_lands_on_the_same_version() -> None:
    split = {1: 50, 2: 50}
    for key in ("alice", "bob", "42"):
        assert len({pick_version(split, {1, 2}, key) for _ in range(50)}) == 1
    spread = Counter(pick_version(split, {1, 2}, f"user-{n}") for n in range(4000))
    assert 0.45 < spread[1] / 4000 < 0.55


def test_ramping_the_newest_version_up_keeps_its_users() -> None:
    keys = [f"user-{n}" for n in range(3000)]
    at_10 = {key for key in keys if pick_version({1: 90, 2: 10}, {1, 2}, key) == 2}
    at_30 = {key for key in keys if pick_version({1: 70, 2: 30}, {1, 2}, key) == 2}
    assert at_10 and at_10 <= at_30


def test_versions_not_ready_or_weighted_zero_are_left_out() -> None:
    assert pick_version({1: 90, 2: 10}, {2}, "anyone") == 2
    assert pick_version({1: 0, 2: 5}, {1, 2}, "anyone") == 2
    assert pick_version({3: 1}, {1, 2}, "anyone") is None


def test_routing_key_parameter() -> None:
    assert routing_key({}) is None
    assert routing_key({"routing_key": "u1"}) == "u1"
    assert routing_key({"routing_key": 17}) == "17"
    for bad in ("", True, 1.5, ["x"]):
        with pytest.raises(InvalidInput, match="routing_key"):
            routing_key({"routing_key": bad})
