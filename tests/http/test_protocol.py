"""One socket write per response (servekit.http.protocol), against the installed uvicorn."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import uvicorn

from servekit.http.protocol import CoalescingTransport, http_protocol


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


def test_writes_of_one_loop_turn_leave_as_one_and_close_flushes_first() -> None:
    async def body() -> None:
        fake = FakeTransport()
        transport = CoalescingTransport(fake, asyncio.get_running_loop())  # type: ignore[arg-type]
        transport.write(b"head ")
        transport.write(b"body")
        assert fake.writes == []
        await asyncio.sleep(0)
        assert fake.writes == [b"head body"]
        transport.write(b"last")
        transport.close()
        assert fake.writes == [b"head body", b"last"] and fake.closed
        assert transport.get_extra_info("peername") == "info:peername"

    asyncio.run(body())


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    size = int(scope["path"].strip("/") or 5)
    payload = b"x" * size
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(size).encode())]})
    await send({"type": "http.response.body", "body": payload})


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _exchange(port: int, requests: bytes, expect: int) -> list[bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(requests)
    bodies: list[bytes] = []
    for _ in range(expect):
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(
            b"content-length"))
        bodies.append(await reader.readexactly(length))
    tail = await asyncio.wait_for(reader.read(), 5) if b"close" in requests else b""
    writer.close()
    assert tail == b""
    return bodies


def test_uvicorn_with_the_protocol_answers_keep_alive_close_and_large_bodies() -> None:
    async def body() -> None:
        port = _free_port()
        config = uvicorn.Config(_app, host="127.0.0.1", port=port, http=http_protocol(), log_level="warning",
                                lifespan="off")
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        try:
            pipelined = b"GET /5 HTTP/1.1\r\nhost: t\r\n\r\n" + b"GET /7 HTTP/1.1\r\nhost: t\r\n\r\n"
            assert await _exchange(port, pipelined, 2) == [b"x" * 5, b"x" * 7]
            large = 4 * 1024 * 1024
            assert await _exchange(port, f"GET /{large} HTTP/1.1\r\nhost: t\r\n\r\n".encode(), 1) == [b"x" * large]
            closing = b"GET /3 HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n"
            assert await _exchange(port, closing, 1) == [b"xxx"]
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, 10)

    asyncio.run(asyncio.wait_for(body(), 30))
