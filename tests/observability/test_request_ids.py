"""Request ids: the client's when usable, else the OIP id, else a made one; settled once per request."""

from __future__ import annotations

import asyncio
import re

import pytest

from servekit.observability import request_ids


def test_made_ids_are_unique_and_carry_a_per_process_prefix() -> None:
    made = {request_ids.new_request_id() for _ in range(1000)}
    assert len(made) == 1000
    prefixes = {made_id.split("-")[0] for made_id in made}
    assert len(prefixes) == 1
    assert re.fullmatch(r"[0-9a-f]{12}", prefixes.pop())


@pytest.mark.parametrize("value", ["", "x" * 129, "caf\u00e9", "a\tb", "line\nbreak", None])
def test_unusable_client_values_are_replaced(value: str | None) -> None:
    assert request_ids.accepted(value) is None


def test_a_usable_client_value_is_kept() -> None:
    assert request_ids.accepted("req-1") == "req-1"
    assert request_ids.accepted("x" * 128) == "x" * 128


def test_a_bound_request_settles_its_id_once() -> None:
    async def one_request(incoming: str | None, oip_id: str | None) -> tuple[str, str, str | None]:
        token = request_ids.bind(incoming)
        try:
            first = request_ids.ensure(oip_id)
            again = request_ids.ensure("some-other-id")
            return first, again, request_ids.current()
        finally:
            request_ids.reset(token)

    async def main() -> None:
        assert await one_request("from-header", "from-body") == ("from-header",) * 3
        assert await one_request(None, "from-body") == ("from-body",) * 3
        made, again, current = await one_request(None, None)
        assert made == again == current and made.count("-") == 1
        # an unusable header is replaced by the OIP id, or a made id
        assert (await one_request("bad\x00id", "from-body"))[0] == "from-body"

    asyncio.run(main())
    assert request_ids.current() is None  # reset: nothing leaks out of the request


def test_outside_a_bound_request_each_call_gets_its_own_id() -> None:
    first, second = request_ids.ensure(), request_ids.ensure()
    assert first != second
    assert request_ids.ensure("oip-7") == "oip-7"
    assert request_ids.current() is None
