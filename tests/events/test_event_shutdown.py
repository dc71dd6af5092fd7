"""A server with open SSE and WebSocket streams shuts down cleanly and promptly on SIGTERM."""

from __future__ import annotations

import asyncio
import signal

import httpx
import websockets
from websockets.exceptions import ConnectionClosed

from .streams import WAIT, SSEReader, wait_subscribers, write

SSE = "/api/v1/memory/events/sse"


async def test_sigterm_with_open_streams_ends_them_and_exits(
    make_server, http: httpx.AsyncClient
) -> None:
    server = make_server(sse_ping_seconds=3600)
    base = server.url
    await write(http, base, "k", 1)
    ws_base = base.replace("http://", "ws://")
    async with (
        SSEReader(http, base + SSE) as live,
        SSEReader(http, base + SSE, headers={"Last-Event-ID": "0"}) as resumed,
        websockets.connect(ws_base + "/api/v1/memory/events/ws") as ws,
    ):
        await live.frame()
        await resumed.events(1)
        await wait_subscribers(http, base, 3)
        proc = server.proc
        assert proc is not None
        proc.send_signal(signal.SIGTERM)
        # Each stream is ended by the server, not cut: SSE bodies complete normally...
        assert await live.rest() == []
        assert await resumed.rest() == []
        # ...and the WebSocket gets a close frame.
        try:
            await asyncio.wait_for(ws.recv(), WAIT)
            raise AssertionError("expected the server to close the socket")
        except ConnectionClosed as closed:
            assert closed.rcvd is not None and closed.rcvd.code in (1001, 1012)
        code = await asyncio.to_thread(proc.wait, WAIT)
    assert code in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after a clean exit
    output = server.output()
    # Had a stream held the server open, uvicorn would have cancelled it after its grace period.
    assert "timeout graceful shutdown exceeded" not in output
    assert "ASGI callable returned without completing response" not in output
    assert "Traceback" not in output
