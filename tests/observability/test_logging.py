"""One log format for servekit's, uvicorn's and grpc's records: text lines or one JSON object per line."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from servekit.observability import request_ids
from servekit.observability.access import configure_access_log, flush, log_request
from servekit.observability.logging import configure_logging

_LOGGERS = ("servekit", "uvicorn", "grpc")


# Levels an in-process uvicorn (another test's, on this worker) sets on uvicorn's own child loggers
# (uvicorn.Config(log_level=...)); here they inherit from "uvicorn", as in a fresh process.
_CHILDREN = ("uvicorn.error", "uvicorn.access", "uvicorn.asgi")


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """The handlers bind the stderr of the test that made them: each test gets its own."""
    saved = {name: (logging.getLogger(name).handlers[:], logging.getLogger(name).level,
                    logging.getLogger(name).propagate) for name in _LOGGERS}
    child_levels = {name: logging.getLogger(name).level for name in _CHILDREN}
    for name in _CHILDREN:
        logging.getLogger(name).setLevel(logging.NOTSET)
    yield
    for name, level in child_levels.items():
        logging.getLogger(name).setLevel(level)
    configure_access_log("off")
    for name, (handlers, level, propagate) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers, logger.level, logger.propagate = handlers, level, propagate


def test_json_records_of_servekit_uvicorn_and_grpc_share_one_shape(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "json", "json")
    logging.getLogger("servekit.http").info("served %d", 3)
    logging.getLogger("uvicorn.error").warning("uvicorn says")
    logging.getLogger("grpc._cython.cygrpc").error("grpc says")
    token = request_ids.bind("req-42")
    try:
        logging.getLogger("servekit.batching").info("inside a request")
        log_request(request_ids.current(), "digits", "1", "http", 200, 0.5, "-")
    finally:
        request_ids.reset(token)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("servekit").exception("failed")
    flush()
    lines = capsys.readouterr().err.splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert [(r["logger"], r["level"], r["message"]) for r in records if r["logger"] != "servekit.access"] == [
        ("servekit.http", "INFO", "served 3"),
        ("uvicorn.error", "WARNING", "uvicorn says"),
        ("grpc._cython.cygrpc", "ERROR", "grpc says"),
        ("servekit.batching", "INFO", "inside a request"),
        ("servekit", "ERROR", "failed"),
    ]
    keys = {"time", "level", "logger", "message", "request_id", "pid"}
    assert all(keys <= set(record) for record in records)
    access = next(r for r in records if r["logger"] == "servekit.access")  # written in batches: last
    assert [r["request_id"] for r in records if r is not access] == [None, None, None, "req-42", None]
    assert access["request_id"] == "req-42"
    assert (access["level"], access["model"], access["status"]) == ("INFO", "digits", 200)
    failed = next(r for r in records if r["message"] == "failed")
    assert "ValueError: boom" in failed["exception"] and "exception" not in access
    assert records[0]["time"].endswith("Z") and access["time"].endswith("Z")


def test_text_records_name_the_request_they_were_made_in(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "off", "text")
    logging.getLogger("uvicorn.error").info("outside")
    token = request_ids.bind("req-9")
    try:
        logging.getLogger("servekit.http").info("inside")
    finally:
        request_ids.reset(token)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    assert lines[0].endswith(" INFO " + lines[0].split()[3] + " uvicorn.error: outside")
    assert lines[1].endswith("servekit.http: inside request_id=req-9")


def test_a_second_call_replaces_the_format(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "off", "text")
    configure_logging("info", "off", "json")
    logging.getLogger("servekit").info("once")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["message"] == "once"
