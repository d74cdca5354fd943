"""The access log: one line per request, text or JSON, off costs nothing; outcomes and statuses."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Iterator

import pytest

from servekit.errors import InvalidSchema, ModelNotFound, QueueFull, ServekitError
from servekit.observability.access import FLUSH_INTERVAL_S, configure_access_log, flush
from servekit.observability.logging import configure_logging
from servekit.observability.requests import RequestObservation, outcome_of


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """servekit's handler binds the stderr of the test that made it: each test gets its own."""
    logger = logging.getLogger("servekit")
    saved = logger.handlers[:], logger.level, logger.propagate
    logger.handlers = [h for h in logger.handlers if not getattr(h, "_servekit", False)]
    yield
    configure_access_log("off")
    logger.handlers, logger.level, logger.propagate = saved


def _observe(error: BaseException | None = None, request_id: str | None = "req-1", model: str = "digits") -> None:
    try:
        with RequestObservation("grpc", model, request_id, lambda: ["digits"]) as seen:
            seen.resolved("digits", "2")
            seen.cache = "hit"
            if error is not None:
                raise error
    except BaseException as raised:
        if raised is not error:
            raise


def test_outcomes_and_statuses_come_from_the_error_table() -> None:
    assert outcome_of(None) == ("success", 200)
    assert outcome_of(QueueFull("full")) == ("queue_full", 503)
    assert outcome_of(InvalidSchema("bad")) == ("invalid_schema", 422)
    assert outcome_of(ModelNotFound("no")) == ("model_not_found", 404)
    assert outcome_of(ServekitError("boom")) == ("servekit_error", 500)
    assert outcome_of(RuntimeError("unexpected")) == ("servekit_error", 500)
    assert outcome_of(asyncio.CancelledError()) == ("cancelled", 499)


def test_text_lines_carry_every_field(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("warning", "text")  # the access log does not depend on --log-level
    _observe()
    _observe(QueueFull("full"), request_id=None)
    flush()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    assert "servekit.access: id=req-1 model=digits version=2 protocol=grpc status=200 duration_ms=" in lines[0]
    assert lines[0].endswith(" cache=hit")
    assert "id=- model=digits version=2 protocol=grpc status=503 " in lines[1]


def test_a_client_cannot_forge_a_text_line(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "text")
    _observe(request_id="x\nINFO forged=1", model="a b")
    flush()
    [line] = capsys.readouterr().err.splitlines()
    assert 'id="x\\nINFO forged=1"' in line and 'model="digits"' not in line


def test_json_lines_are_one_object_each(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "json")
    _observe()
    _observe(ModelNotFound("no"), request_id=None)
    flush()
    first, second = (json.loads(line) for line in capsys.readouterr().err.splitlines())
    assert set(first) == {"time", "level", "logger", "message", "request_id", "pid", "model", "version", "protocol",
                          "status", "duration_ms", "cache"}
    assert (first["request_id"], first["model"], first["version"], first["protocol"], first["status"]) == (
        "req-1", "digits", "2", "grpc", 200)
    assert (first["level"], first["logger"]) == ("INFO", "servekit.access")
    assert isinstance(first["duration_ms"], float) and first["time"].endswith("Z")
    assert second["request_id"] is None and second["status"] == 404


def test_off_writes_nothing(capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    configure_logging("debug", "off")
    with caplog.at_level(logging.DEBUG, logger="servekit.access"):
        _observe()
    flush()
    assert capsys.readouterr().err == ""
    assert not [record for record in caplog.records if record.name == "servekit.access"]


def test_lines_reach_stderr_without_a_flush_within_the_interval(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("warning", "text")
    _observe()
    seen = ""
    deadline = time.monotonic() + 50 * FLUSH_INTERVAL_S  # generous: the machine may be busy
    while "servekit.access: id=req-1" not in seen and time.monotonic() < deadline:
        time.sleep(FLUSH_INTERVAL_S / 2)
        seen += capsys.readouterr().err
    assert "servekit.access: id=req-1 model=digits" in seen


def test_text_prefix_matches_servekits_other_log_lines(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "text")
    logging.getLogger("servekit.test").info("hello")
    _observe()
    flush()
    other, access_line = capsys.readouterr().err.splitlines()
    pattern = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO \d+ servekit\.%s: "
    assert re.match(pattern % "test", other) and re.match(pattern % "access", access_line)
