"""A callee that accepts the request and never answers: the caller gets a failed status
with the reason at the deadline (``execute_timeout_seconds``), never a hang."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from agentfield_asgi.server.app import create_memory_app


@pytest.fixture
async def silent_node() -> AsyncIterator[str]:
    """A loopback server that reads requests and never answers."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        await reader.read(65536)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_silent_callee_fails_at_the_deadline(database_url: str, silent_node: str) -> None:
    service = create_memory_app(database_url, execute_timeout_seconds=1.0)
    await service.start()
    try:
        transport = httpx.ASGITransport(app=service.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=30) as cp:
            node = {"id": "silent", "base_url": silent_node, "reasoners": [{"id": "r"}]}
            assert (await cp.post("/api/v1/nodes/register", json=node)).status_code == 201
            started = time.monotonic()
            sync = await cp.post("/api/v1/execute/silent.r", json={"input": {}})
            assert 0.9 < time.monotonic() - started < 10
            assert sync.status_code == 502
            body = sync.json()
            assert body["code"] == "node_unreachable" and body["details"]["reason"] == "timeout"
            submitted = await cp.post("/api/v1/execute/async/silent.r", json={"input": {}})
            assert submitted.status_code == 202
            execution_id = submitted.json()["execution_id"]
            for _ in range(200):
                status = (await cp.get(f"/api/v1/executions/{execution_id}")).json()
                if status["status"] != "running":
                    break
                await asyncio.sleep(0.05)
            # the forward timing out, or a read past the deadline: whichever comes first
            assert status["status"] == "failed"
            assert status["error_details"]["reason"] in ("timeout", "deadline")
            workflow = (await cp.get(f"/api/v1/workflows/{status['workflow_id']}")).json()
            assert workflow["status"] == "failed"
    finally:
        await service.stop()
