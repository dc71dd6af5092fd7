"""``GET /api/v1/memory/events/ws`` the way AgentField's SDK uses it: ``websockets.connect``
with execution-context headers and ``X-API-Key``, one JSON event per text frame."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket

import httpx
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from .streams import WAIT, subscribers, wait_subscribers, write

WS = "/api/v1/memory/events/ws"
SDK_HEADERS = {"X-Workflow-ID": "wf-1", "X-Agent-Node-ID": "support-agent", "X-API-Key": "k"}


def ws_url(base: str, query: str = "") -> str:
    return base.replace("http://", "ws://") + WS + (f"?{query}" if query else "")


async def recv(ws: websockets.ClientConnection) -> dict:
    message = await asyncio.wait_for(ws.recv(), WAIT)
    assert isinstance(message, str)  # a text frame
    return json.loads(message)


async def test_one_json_event_per_text_frame(make_server, http: httpx.AsyncClient) -> None:
    server = make_server()
    base = server.url
    async with websockets.connect(ws_url(base), additional_headers=SDK_HEADERS) as ws:
        await wait_subscribers(http, base, 1)
        await write(
            http, base, "customer_1", {"tier": "gold"}, headers={"X-Agent-Node-ID": "writer"}
        )
        await write(http, base, "customer_1", {"tier": "silver"})
        first, second = await recv(ws), await recv(ws)
    await wait_subscribers(http, base, 0)
    assert first["type"] == "memory_change" and first["key"] == "customer_1"
    assert first["action"] == "set" and first["data"] == {"tier": "gold"}
    assert first["metadata"]["agent_id"] == "writer"
    assert second["previous_data"] == {"tier": "gold"} and second["data"] == {"tier": "silver"}
    assert int(second["id"]) > int(first["id"])


async def test_filters_as_the_sdk_sends_them(make_server, http: httpx.AsyncClient) -> None:
    server = make_server()
    base = server.url
    url = ws_url(base, "patterns=customer_*,order_?&scope=session&scope_id=s1")
    async with websockets.connect(url, additional_headers=SDK_HEADERS) as ws:
        await wait_subscribers(http, base, 1)
        s1, s2 = {"X-Session-ID": "s1"}, {"X-Session-ID": "s2"}
        await write(http, base, "customer_9", 0, scope="session", headers=s2)
        await write(http, base, "other", 0, scope="session", headers=s1)
        await write(http, base, "order_ab", 0, scope="session", headers=s1)
        await write(http, base, "order_a", 1, scope="session", headers=s1)
        await write(http, base, "customer_9", 2, scope="session", headers=s1)
        got = [await recv(ws), await recv(ws)]
    assert [(e["key"], e["data"]) for e in got] == [("order_a", 1), ("customer_9", 2)]


async def test_since_id_resumes(make_server, http: httpx.AsyncClient) -> None:
    server = make_server()
    base = server.url
    written = [await write(http, base, f"k{i}", i) for i in range(10)]
    history = (await http.get(base + "/api/v1/memory/events/history")).json()
    since = history[2]["id"]
    async with websockets.connect(ws_url(base, f"since_id={since}")) as ws:
        replayed = [await recv(ws) for _ in range(7)]
        await write(http, base, "live", 1)
        live = await recv(ws)
    assert [e["data"] for e in replayed] == [r["data"] for r in written[3:]]
    assert [e["id"] for e in replayed] == [e["id"] for e in history[3:]]
    assert live["key"] == "live"


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("patterns=order_%5Babc", "invalid_pattern"),
        ("scope=planet", "invalid_scope"),
        ("since_id=x", "invalid_parameter"),
    ],
)
async def test_bad_input_refuses_the_handshake_with_400(
    make_server, http: httpx.AsyncClient, query: str, code: str
) -> None:
    server = make_server()
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(ws_url(server.url, query)):
            pass
    response = info.value.response
    assert response.status_code == 400
    assert json.loads(response.body)["code"] == code
    assert await subscribers(http, server.url) == 0


async def test_abrupt_disconnect_unregisters(make_server, http: httpx.AsyncClient) -> None:
    server = make_server()
    base = server.url
    clean = await websockets.connect(ws_url(base))
    abrupt = await websockets.connect(ws_url(base))
    await wait_subscribers(http, base, 2)
    await clean.close()
    abrupt.transport.abort()  # no close frame, as when a process dies
    await wait_subscribers(http, base, 0)
    # The server is unaffected: a new subscriber still gets events.
    async with websockets.connect(ws_url(base)) as ws:
        await wait_subscribers(http, base, 1)
        await write(http, base, "after", 1)
        assert (await recv(ws))["key"] == "after"


class StalledClient:
    """A WebSocket client on a raw socket that stops reading after the handshake (the
    ``websockets`` library keeps reading in the background, so it cannot play this part)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.settimeout(WAIT)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET {WS} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self.sock.recv(1)
        assert self.buffer.startswith(b"HTTP/1.1 101"), self.buffer
        self.buffer = b""

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise EOFError
            self.buffer += chunk
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def read_to_end(self) -> bool:
        """Discard what the server sent until it closes the connection (True)."""
        while self.sock.recv(1 << 16):
            pass
        return True

    def frames(self) -> tuple[list[str], int]:
        """Read every frame until the server's close frame: (texts, close code)."""
        texts = []
        while True:
            opcode, length = self._read(2)
            length &= 0x7F
            if length >= 126:
                length = int.from_bytes(self._read(2 if length == 126 else 8), "big")
            payload = self._read(length)
            if opcode & 0x0F == 0x8:
                return texts, int.from_bytes(payload[:2], "big")
            if opcode & 0x0F in (0x9, 0xA):  # ping / pong
                continue
            assert opcode & 0x0F == 0x1, opcode  # text frames only
            texts.append(payload.decode())


async def test_overflowing_subscriber_is_dropped_then_closed_with_1013(
    make_server, http: httpx.AsyncClient
) -> None:
    server = make_server(subscriber_queue_size=4)
    base = server.url
    big = "x" * 128 * 1024
    stalled = StalledClient(server.port)
    try:
        await wait_subscribers(http, base, 1)
        written = 0
        while await subscribers(http, base):  # unregistered as soon as its queue overflows
            await write(http, base, f"big_{written}", big)
            written += 1
            assert written < 1000, "the subscriber was never cut off"
        texts, code = await asyncio.to_thread(stalled.frames)
    finally:
        stalled.sock.close()
    assert code == 1013
    received = [json.loads(t)["key"] for t in texts]
    assert 0 < len(received) < written
    assert received == [f"big_{i}" for i in range(len(received))]


async def test_a_reader_that_stops_for_good_is_closed_after_the_send_timeout(
    make_server, http: httpx.AsyncClient
) -> None:
    server = make_server(subscriber_queue_size=4, sse_send_timeout_seconds=1)
    base = server.url
    big = "x" * 128 * 1024
    stalled = StalledClient(server.port)
    try:
        await wait_subscribers(http, base, 1)
        written = 0
        while await subscribers(http, base):
            await write(http, base, f"big_{written}", big)
            written += 1
            assert written < 1000, "the subscriber was never cut off"
        # Never reading again: the server gives up on its blocked send and drops the socket.
        await asyncio.sleep(3)
        ended = await asyncio.to_thread(stalled.read_to_end)
    finally:
        stalled.sock.close()
    assert ended
    assert "Traceback" not in server.output()
