"""The native front end's HTTP/2 session (the C extension), driven in-process by the h2 client.

No sockets: the client's bytes go into ``Session.feed`` and the session's into the client, so
each test sees exactly which frames go each way (flow control included).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import missing, require_module

h2_config = require_module("h2.config", "pip install h2")
h2_connection = require_module("h2.connection", "pip install h2")
h2_events = require_module("h2.events", "pip install h2")

try:
    from servekit.grpc.native import _h2  # type: ignore[attr-defined]
except ImportError:
    missing("servekit's native gRPC front end (the C extension built from libnghttp2's headers)",
            "apt-get install libnghttp2-dev && pip install -e .")

PATH = b"/pkg.Service/Method"
STREAMING = b"/pkg.Service/Stream"
OK = ((b"grpc-status", b"0"),)


def framed(message: bytes) -> bytes:
    return b"\x00" + len(message).to_bytes(4, "big") + message


class Pair:
    """An h2 client and a servekit session, bytes passed between them by hand."""

    def __init__(self, **session: Any) -> None:
        self.session = _h2.Session(**session)
        self.client = h2_connection.H2Connection(h2_config.H2Configuration(client_side=True, header_encoding=None))
        self.client.initiate_connection()
        self.events: list[Any] = []
        self.pump()

    def pump(self) -> list[Any]:
        """Client bytes to the session, its answer back; returns the session's events."""
        got = self.session.feed(self.client.data_to_send())
        self.events += self.client.receive_data(self.session.data_to_send())
        self.session.feed(self.client.data_to_send())  # acknowledgements
        return list(got)

    def open(self, path: bytes = PATH, *, end: bool = False, extra: tuple[tuple[bytes, bytes], ...] = ()) -> int:
        stream_id: int = self.client.get_next_available_stream_id()
        headers = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", path), (b":authority", b"test"),
                   (b"content-type", b"application/grpc"), (b"te", b"trailers"), *extra]
        self.client.send_headers(stream_id, headers, end_stream=end)
        return stream_id

    def of(self, kind: type, stream_id: int) -> list[Any]:
        return [event for event in self.events if isinstance(event, kind) and event.stream_id == stream_id]


def test_a_unary_call_arrives_whole_and_its_answer_has_data_then_trailers() -> None:
    pair = Pair()
    stream_id = pair.open(extra=((b"x-request-id", b"r-1"),))
    pair.client.send_data(stream_id, framed(b"hello"), end_stream=True)
    [(got_id, path, metadata, message)] = pair.pump()
    assert (got_id, path, message) == (stream_id, PATH, framed(b"hello"))
    assert (b"x-request-id", b"r-1") in metadata and all(not name.startswith(b":") for name, _ in metadata)
    assert pair.session.respond(stream_id, b"world", (*OK, (b"x-request-id", b"r-1"))) is True
    pair.pump()
    [response] = pair.of(h2_events.ResponseReceived, stream_id)
    assert dict(response.headers)[b":status"] == b"200"
    assert dict(response.headers)[b"content-type"] == b"application/grpc"
    assert b"".join(event.data for event in pair.of(h2_events.DataReceived, stream_id)) == framed(b"world")
    [trailers] = pair.of(h2_events.TrailersReceived, stream_id)
    assert dict(trailers.headers) == {b"grpc-status": b"0", b"x-request-id": b"r-1"}
    assert pair.of(h2_events.StreamEnded, stream_id)
    assert pair.session.respond(stream_id, b"again", OK) is False  # answered and closed


def test_an_error_is_one_headers_frame_with_the_status() -> None:
    pair = Pair()
    stream_id = pair.open(end=True)  # no body at all
    [(_, _, _, message)] = pair.pump()
    assert message == b""
    pair.session.respond(stream_id, None, ((b"grpc-status", b"3"), (b"grpc-message", b"bad%20input")))
    pair.pump()
    [response] = pair.of(h2_events.ResponseReceived, stream_id)
    assert dict(response.headers)[b"grpc-status"] == b"3" and pair.of(h2_events.StreamEnded, stream_id)
    assert not pair.of(h2_events.DataReceived, stream_id) and not pair.of(h2_events.TrailersReceived, stream_id)


def test_a_body_past_the_limit_is_handed_over_as_none() -> None:
    pair = Pair(max_message_bytes=1024)
    stream_id = pair.open()
    pair.client.send_data(stream_id, framed(b"x" * 2000), end_stream=True)
    assert pair.pump() == [(stream_id, PATH, [(b"content-type", b"application/grpc"), (b"te", b"trailers")], None)]


def test_a_reset_before_the_answer_is_reported_and_answering_it_is_refused() -> None:
    pair = Pair()
    stream_id = pair.open()
    pair.client.send_data(stream_id, framed(b"q"), end_stream=True)
    assert len(pair.pump()) == 1
    pair.client.reset_stream(stream_id)
    assert pair.pump() == [(stream_id, None, None, None)]
    assert pair.session.respond(stream_id, b"late", OK) is False


def test_a_streaming_call_is_handed_over_as_it_arrives_and_answered_as_made() -> None:
    pair = Pair(streaming_paths=frozenset({STREAMING}))
    stream_id = pair.open(STREAMING)
    [(got_id, path, _, opened)] = pair.pump()
    assert (got_id, path, opened) == (stream_id, STREAMING, True)
    pair.client.send_data(stream_id, framed(b"one") + framed(b"tw"))
    assert pair.pump() == [(stream_id, None, framed(b"one") + framed(b"tw"), False)]
    assert pair.session.start(stream_id) and pair.session.send(stream_id, b"first")
    pair.pump()
    assert b"".join(e.data for e in pair.of(h2_events.DataReceived, stream_id)) == framed(b"first")
    assert not pair.of(h2_events.StreamEnded, stream_id)  # the answer goes on
    pair.client.send_data(stream_id, b"", end_stream=True)
    assert pair.pump() == [(stream_id, None, b"", True)]
    assert pair.session.send(stream_id, b"second") and pair.session.finish(stream_id, OK)
    pair.pump()
    assert b"".join(e.data for e in pair.of(h2_events.DataReceived, stream_id)) == framed(b"first") + framed(b"second")
    assert dict(pair.of(h2_events.TrailersReceived, stream_id)[0].headers) == {b"grpc-status": b"0"}
    assert pair.of(h2_events.StreamEnded, stream_id)


def _window_updates(pair: Pair, stream_id: int) -> int:
    return sum(event.delta for event in pair.of(h2_events.WindowUpdated, stream_id))


def test_a_streaming_calls_window_is_credited_only_as_its_data_is_taken() -> None:
    pair = Pair(streaming_paths=frozenset({STREAMING}))
    unary, streaming = pair.open(), pair.open(STREAMING)
    chunk = b"x" * 16000
    for _ in range(40):  # 640 kB each: past half the 1 MiB stream window
        pair.client.send_data(unary, chunk)
        pair.client.send_data(streaming, chunk)
        pair.pump()
    assert _window_updates(pair, unary) > 0  # a unary body is credited as it arrives
    assert _window_updates(pair, streaming) == 0  # nothing taken yet: the client must wait
    pair.session.consume(streaming, 40 * len(chunk))
    pair.pump()
    assert _window_updates(pair, streaming) > 0


def test_bytes_that_are_not_http2_raise() -> None:
    session = _h2.Session()
    with pytest.raises(_h2.H2Error):
        session.feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")


# -- fuzz: whatever a peer sends, the session answers or raises H2Error; it never crashes -------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=200), max_size=8))
def test_arbitrary_bytes_after_the_preface_never_crash_the_session(chunks: list[bytes]) -> None:
    session = _h2.Session(streaming_paths=frozenset({STREAMING}))
    try:
        session.feed(PREFACE)
        for chunk in chunks:
            session.feed(chunk)
            session.data_to_send()
    except _h2.H2Error:
        pass
    session.data_to_send()


_OPERATIONS = st.lists(st.tuples(
    st.sampled_from(["open", "open_streaming", "data", "end", "reset", "respond", "fail", "start", "send", "finish",
                     "consume"]),
    st.integers(min_value=0, max_value=4), st.binary(max_size=64)), max_size=25)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_OPERATIONS)
def test_any_order_of_client_and_server_steps_keeps_the_session_whole(operations: list[tuple[str, int, bytes]]) -> None:
    pair = Pair(streaming_paths=frozenset({STREAMING}), max_message_bytes=1024)
    streams: list[int] = []
    for operation, which, payload in operations:
        stream_id = streams[which % len(streams)] if streams else 1
        try:
            if operation in ("open", "open_streaming"):
                streams.append(pair.open(STREAMING if operation == "open_streaming" else PATH))
            elif operation == "data":
                pair.client.send_data(stream_id, framed(payload))
            elif operation == "end":
                pair.client.end_stream(stream_id)
            elif operation == "reset":
                pair.client.reset_stream(stream_id)
        except Exception:  # the client refuses a step its stream's state forbids: fine, skip it
            continue
        if operation == "respond":
            pair.session.respond(stream_id, payload, OK)
        elif operation == "fail":
            pair.session.respond(stream_id, None, ((b"grpc-status", b"13"),))
        elif operation == "start":
            pair.session.start(stream_id)
        elif operation == "send":
            pair.session.send(stream_id, payload)
        elif operation == "finish":
            pair.session.finish(stream_id, OK)
        elif operation == "consume":
            pair.session.consume(stream_id, len(payload))
        try:
            pair.pump()
        except Exception:  # h2 (the client) may object to what it receives; the session must not crash
            return
