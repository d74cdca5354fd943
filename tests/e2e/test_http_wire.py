"""HTTP/1.1 on the wire for the hot routes, which servekit's protocol answers without ASGI
(servekit.http.protocol): keep-alive, pipelining, Connection: close, HTTP/1.0, and the cases it
leaves to uvicorn and the app (chunked bodies, Expect: 100-continue, bodies over the limit), all
over a real socket to a real ``servekit serve``. Every answer is checked for its status, its
headers and its body, and a connection's answers for their order."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest

from .harness import HOST, SIMPLE_MAX_REQUEST_BYTES, ServerProcess
from .repos import onnx_expected

ROW = [0.5, -1.0, 2.0, 0.25]


def _infer_body(rows: list[list[float]], request_id: str | None = None) -> bytes:
    document: dict[str, object] = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [len(rows), 4],
                                               "data": [v for row in rows for v in row]}]}
    if request_id is not None:
        document["id"] = request_id
    return json.dumps(document).encode()


def _post(path: str, body: bytes, *headers: str, version: str = "1.1") -> bytes:
    lines = [f"POST {path} HTTP/{version}", f"host: {HOST}", "content-type: application/json",
             f"content-length: {len(body)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Connection:
    """One raw TCP connection; reads whole responses (Content-Length or chunked bodies)."""

    def __init__(self, server: ServerProcess) -> None:
        self.sock = socket.create_connection((HOST, server.port), timeout=30)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def _take(self, size: int) -> bytes:
        while len(self.buffer) < size:
            assert self._fill(), "the server closed the connection mid-response"
        taken, self.buffer = self.buffer[:size], self.buffer[size:]
        return taken

    def _line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            assert self._fill(), "the server closed the connection mid-response"
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def response(self) -> tuple[int, dict[str, str], bytes]:
        status = int(self._line().split(b" ")[1])
        headers: dict[str, str] = {}
        while line := self._line():
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while size := int(self._line(), 16):
                body += self._take(size)
                self._take(2)
            self._take(2)
            return status, headers, body
        return status, headers, self._take(int(headers.get("content-length", "0")))

    def closed_by_server(self) -> bool:
        return self.buffer == b"" and not self._fill()

    def close(self) -> None:
        self.sock.close()


def _probabilities(body: bytes) -> np.ndarray:
    outputs = {output["name"]: output for output in json.loads(body)["outputs"]}
    y = outputs["y"]
    return np.array(y["data"], dtype=np.float64).reshape(y["shape"])


@pytest.fixture
def connection(main_server: ServerProcess) -> Connection:
    opened = Connection(main_server)
    yield opened  # type: ignore[misc]
    opened.close()


def test_keep_alive_answers_each_request_on_one_connection(connection: Connection) -> None:
    for i in range(3):
        connection.send(_post("/v2/models/onnx_linear/infer", _infer_body([ROW], f"call-{i}"),
                              f"x-request-id: wire-{i}"))
        status, headers, body = connection.response()
        assert status == 200 and headers["content-type"] == "application/json"
        assert headers["x-request-id"] == f"wire-{i}" and "connection" not in headers
        assert int(headers["content-length"]) == len(body) and "date" in headers
        document = json.loads(body)
        assert document["id"] == f"call-{i}" and document["model_name"] == "onnx_linear"
        np.testing.assert_allclose(_probabilities(body), onnx_expected(np.array([ROW]))[0], rtol=1e-5)


def test_pipelined_requests_are_answered_in_order(connection: Connection) -> None:
    """Hot, FastAPI's, hot again, a versioned hot one and an error, sent in one write."""
    rows = [[float(i), 1.0, 0.0, -1.0] for i in range(3)]
    connection.send(
        _post("/v2/models/onnx_linear/infer", _infer_body([rows[0]]))
        + f"GET /v2/models/onnx_linear HTTP/1.1\r\nhost: {HOST}\r\n\r\n".encode()
        + _post("/v2/models/onnx_linear/infer", _infer_body([rows[1]]))
        + _post("/v2/models/onnx_linear/versions/1/infer", _infer_body([rows[2]]))
        + _post("/v2/models/no_such_model/infer", _infer_body([rows[0]]))
    )
    first, metadata, second, third, missing = (connection.response() for _ in range(5))
    np.testing.assert_allclose(_probabilities(first[2]), onnx_expected(np.array([rows[0]]))[0], rtol=1e-5)
    assert metadata[0] == 200 and json.loads(metadata[2])["name"] == "onnx_linear"
    np.testing.assert_allclose(_probabilities(second[2]), onnx_expected(np.array([rows[1]]))[0], rtol=1e-5)
    assert third[0] == 200 and json.loads(third[2])["model_version"] == "1"
    np.testing.assert_allclose(_probabilities(third[2]), onnx_expected(np.array([rows[2]]), 1)[0], rtol=1e-5)
    assert missing[0] == 404 and "no_such_model" in json.loads(missing[2])["error"]
    assert missing[1]["x-request-id"] == json.loads(missing[2])["request_id"]


def test_connection_close_and_http_1_0_close_after_the_answer(main_server: ServerProcess) -> None:
    for request in (_post("/v2/models/onnx_linear/infer", _infer_body([ROW]), "connection: close"),
                    _post("/v2/models/onnx_linear/infer", _infer_body([ROW]), version="1.0")):
        connection = Connection(main_server)
        try:
            connection.send(request)
            status, headers, body = connection.response()
            assert status == 200 and headers["connection"] == "close"
            np.testing.assert_allclose(_probabilities(body), onnx_expected(np.array([ROW]))[0], rtol=1e-5)
            assert connection.closed_by_server()
        finally:
            connection.close()


def test_bad_requests_on_the_hot_path_get_their_4xx_and_the_connection_goes_on(connection: Connection) -> None:
    cases = [
        (b"{not json", 400, "JSON"),
        (json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}).encode(),
         400, "x"),
        (json.dumps({"inputs": [{"name": "nope", "datatype": "FP32", "shape": [1, 4], "data": ROW}]}).encode(),
         400, "nope"),
    ]
    for body, expected, named in cases:
        connection.send(_post("/v2/models/onnx_linear/infer", body))
        status, headers, answer = connection.response()
        document = json.loads(answer)
        assert status == expected and named in document["error"], (status, document)
        assert headers["content-type"] == "application/json" and document["request_id"] == headers["x-request-id"]
    connection.send(_post("/v2/models/onnx_linear/infer", _infer_body([ROW])))
    assert connection.response()[0] == 200


def test_chunked_and_expect_continue_requests_take_uvicorn_s_path_with_the_same_answers(
        connection: Connection) -> None:
    body = _infer_body([ROW])
    half = len(body) // 2
    chunked = (f"POST /v2/models/onnx_linear/infer HTTP/1.1\r\nhost: {HOST}\r\ntransfer-encoding: chunked\r\n"
               f"content-type: application/json\r\n\r\n{half:x}\r\n").encode() + body[:half] + (
        f"\r\n{len(body) - half:x}\r\n").encode() + body[half:] + b"\r\n0\r\n\r\n"
    connection.send(chunked)
    status, _, answer = connection.response()
    assert status == 200
    np.testing.assert_allclose(_probabilities(answer), onnx_expected(np.array([ROW]))[0], rtol=1e-5)
    connection.send(_post("/v2/models/onnx_linear/infer", b"", "expect: 100-continue").replace(
        b"content-length: 0", f"content-length: {len(body)}".encode()))
    assert connection.response()[0] == 100  # the interim answer, before the body is sent
    connection.send(body)
    status, _, answer = connection.response()
    assert status == 200
    np.testing.assert_allclose(_probabilities(answer), onnx_expected(np.array([ROW]))[0], rtol=1e-5)


def test_a_body_over_the_limit_gets_413_before_it_is_sent(simple_server: ServerProcess) -> None:
    connection = Connection(simple_server)
    try:
        head = _post("/predict", b"").replace(b"content-length: 0",
                                              f"content-length: {SIMPLE_MAX_REQUEST_BYTES + 1}".encode())
        connection.send(head)
        status, _, answer = connection.response()
        assert status == 413 and str(SIMPLE_MAX_REQUEST_BYTES) in json.loads(answer)["detail"]
    finally:
        connection.close()


def test_a_client_gone_before_its_answer_leaves_the_server_serving(main_server: ServerProcess) -> None:
    for _ in range(5):
        gone = Connection(main_server)
        gone.send(_post("/v2/models/onnx_linear/infer", _infer_body([ROW] * 4)))
        gone.close()
    connection = Connection(main_server)
    try:
        connection.send(_post("/v2/models/onnx_linear/infer", _infer_body([ROW])))
        assert connection.response()[0] == 200
    finally:
        connection.close()
