"""Control-plane routes: node registry, execute errors, workflow completion and retention."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from agentfield_asgi import create_memory_app
from agentfield_asgi.server.app import MemoryService
from agentfield_asgi.testing import free_port


async def put(
    client: httpx.AsyncClient, key: str, data: object, scope: str, **headers: str
) -> None:
    reply = await client.post(
        "/api/v1/memory/set", json={"key": key, "data": data, "scope": scope}, headers=headers
    )
    assert reply.status_code == 200, reply.text


async def keys(client: httpx.AsyncClient, scope: str, **headers: str) -> list[str]:
    reply = await client.get("/api/v1/memory/list", params={"scope": scope}, headers=headers)
    return [item["key"] for item in reply.json()]


async def test_complete_removes_only_workflow_memory_with_a_delete_event_per_key(
    service: MemoryService, client: httpx.AsyncClient
) -> None:
    wf = {"X-Workflow-ID": "wf-done"}
    await put(client, "a", 1, "workflow", **wf)
    await put(client, "b", {"x": 2}, "workflow", **wf)
    await put(client, "kept", 1, "workflow", **{"X-Workflow-ID": "wf-other"})
    await put(client, "s", 1, "session", **{"X-Session-ID": "s-1"})
    await put(client, "t", 1, "actor", **{"X-Actor-ID": "a-1"})
    await put(client, "g", 1, "global")
    before = await service.store.last_event_id()

    reply = await client.post("/api/v1/workflows/wf-done/complete")
    assert reply.status_code == 200
    assert reply.json()["status"] == "succeeded"

    assert await keys(client, "workflow", **wf) == []
    assert await keys(client, "workflow", **{"X-Workflow-ID": "wf-other"}) == ["kept"]
    assert await keys(client, "session", **{"X-Session-ID": "s-1"}) == ["s"]
    assert await keys(client, "actor", **{"X-Actor-ID": "a-1"}) == ["t"]
    assert "g" in await keys(client, "global")
    events = await service.store.events_after(before, 100)
    assert [(e.scope, e.scope_id, e.key, e.action) for e in events] == [
        ("workflow", "wf-done", "a", "delete"),
        ("workflow", "wf-done", "b", "delete"),
    ]
    assert events[1].previous_data == {"x": 2}
    assert events[0].metadata["reason"] == "workflow_completed"

    workflow = (await client.get("/api/v1/workflows/wf-done")).json()
    assert workflow["status"] == "succeeded" and workflow["completed_at"].endswith("Z")


async def test_complete_status_and_errors(client: httpx.AsyncClient) -> None:
    failed = await client.post(
        "/api/v1/workflows/wf-f/complete", json={"status": "failed", "error": "x"}
    )
    assert failed.status_code == 200
    assert (await client.get("/api/v1/workflows/wf-f")).json()["status"] == "failed"
    await put(client, "k", 1, "workflow", **{"X-Workflow-ID": "wf-bad"})
    bad = await client.post("/api/v1/workflows/wf-bad/complete", json={"status": "done"})
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_parameter"
    assert await keys(client, "workflow", **{"X-Workflow-ID": "wf-bad"}) == ["k"]  # unchanged
    missing = await client.get("/api/v1/workflows/wf-never")
    assert missing.status_code == 404 and missing.json()["code"] == "workflow_not_found"


@pytest.fixture
async def slow_removal(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    service = create_memory_app(database_url, workflow_retention_seconds=3600)
    await service.start()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=service.app), base_url="http://cp"
    ) as c:
        yield c
    await service.stop()


async def test_retention_keeps_memory_until_it_expires(
    slow_removal: httpx.AsyncClient,
) -> None:
    client = slow_removal
    await put(client, "k", 1, "workflow", **{"X-Workflow-ID": "wf-kept"})
    workflow = (await client.post("/api/v1/workflows/wf-kept/complete")).json()
    assert workflow["memory_removed_at"] > workflow["completed_at"]
    assert await keys(client, "workflow", **{"X-Workflow-ID": "wf-kept"}) == ["k"]


async def test_short_retention_removes_memory_later(database_url: str) -> None:
    service = create_memory_app(database_url, workflow_retention_seconds=0.05)
    await service.start()
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=service.app), base_url="http://cp"
        ) as client:
            await put(client, "k", 1, "workflow", **{"X-Workflow-ID": "wf-later"})
            assert (await client.post("/api/v1/workflows/wf-later/complete")).status_code == 200
            for _ in range(600):
                if not await keys(client, "workflow", **{"X-Workflow-ID": "wf-later"}):
                    break
                await asyncio.sleep(0.05)
            assert await keys(client, "workflow", **{"X-Workflow-ID": "wf-later"}) == []
    finally:
        await service.stop()


async def test_register_validates_and_lists(client: httpx.AsyncClient) -> None:
    for body in (
        {},
        {"node_id": ""},
        {"node_id": "n", "base_url": "ftp://x"},
        {"node_id": "n", "reasoners": "r"},
        {"node_id": "n", "reasoners": [""]},
    ):
        reply = await client.post("/api/v1/nodes/register", json=body)
        assert reply.status_code == 400, body
        assert set(reply.json()) == {"error", "code", "details"}
    assert (await client.get("/api/v1/nodes")).json() == {"nodes": [], "count": 0}
    ok = await client.post(
        "/api/v1/nodes/register",
        json={"node_id": "n", "base_url": "http://127.0.0.1:1/", "reasoners": ["b", {"id": "a"}]},
    )
    assert ok.status_code == 201
    assert ok.json()["node_id"] == "n" and ok.json()["resolved_base_url"] == "http://127.0.0.1:1"
    listed = (await client.get("/api/v1/nodes")).json()
    assert listed["count"] == 1 and listed["nodes"] == [ok.json()["node"]]
    assert listed["nodes"][0]["reasoners"] == [{"id": "a"}, {"id": "b"}]


async def test_execute_unreachable_node_fails_the_workflow(client: httpx.AsyncClient) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    await client.post(
        "/api/v1/nodes/register", json={"node_id": "gone", "base_url": url, "reasoners": ["r"]}
    )
    reply = await client.post(
        "/api/v1/execute/gone.r", json={"input": {}}, headers={"X-Session-ID": "s"}
    )
    assert reply.status_code == 502
    assert reply.json()["code"] == "node_unreachable"
    nodes_without_url = await client.post(
        "/api/v1/nodes/register", json={"node_id": "nourl", "reasoners": ["r"]}
    )
    assert nodes_without_url.status_code == 201
    assert (await client.post("/api/v1/execute/nourl.r", json={})).json()[
        "code"
    ] == "node_unreachable"


async def test_execute_rejects_bad_input(client: httpx.AsyncClient) -> None:
    await client.post(
        "/api/v1/nodes/register",
        json={"node_id": "n", "base_url": "http://127.0.0.1:1", "reasoners": ["r"]},
    )
    reply = await client.post("/api/v1/execute/n.r", json={"input": [1, 2]})
    assert reply.status_code == 400 and reply.json()["code"] == "invalid_input"
    malformed = await client.post("/api/v1/execute/n.r", content=b"{nope")
    assert malformed.status_code == 400 and malformed.json()["code"] == "invalid_json"
