"""The node registry and execution records in AgentField's shapes (in-process service)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from agentfield_asgi.server.app import MemoryService, create_memory_app

# What the public SDK 0.1.144 sends (client.register_agent), trimmed to the fields we read.
SDK_DOCUMENT = {
    "id": "sdk-node",
    "team_id": "default",
    "base_url": "http://127.0.0.1:1",
    "version": "1.2.3",
    "reasoners": [
        {
            "id": "triage",
            "input_schema": {"type": "object", "properties": {"text": {"type": "string"}}},
            "output_schema": {"type": "object"},
            "tags": ["support"],
            "memory_config": {"auto_inject": []},
        }
    ],
    "skills": [{"id": "lookup", "input_schema": {"type": "object"}, "tags": []}],
    "proposed_tags": [],
    "instance_id": "inst-1",
    "communication_config": {"protocols": ["http"], "heartbeat_interval": "5s"},
    "health_status": "healthy",
    "metadata": {"deployment": {"platform": "python"}, "custom": {}},
}


def error_body(reply: httpx.Response) -> dict[str, object]:
    body = reply.json()
    assert set(body) == {"error", "code", "details"}, body
    return body  # type: ignore[no-any-return]


async def test_sdk_registration_document_is_accepted_and_listed(
    client: httpx.AsyncClient,
) -> None:
    reply = await client.post("/api/v1/nodes/register", json=SDK_DOCUMENT)
    assert reply.status_code == 201
    body = reply.json()
    assert body["success"] is True and body["node_id"] == "sdk-node"
    assert body["resolved_base_url"] == "http://127.0.0.1:1"
    listed = (await client.get("/api/v1/nodes")).json()
    assert listed["count"] == 1
    (node,) = listed["nodes"]
    assert node["id"] == "sdk-node" and node["version"] == "1.2.3"
    assert node["instance_id"] == "inst-1" and node["health_status"] == "active"
    assert node["reasoners"][0]["input_schema"]["properties"]["text"] == {"type": "string"}
    assert "memory_config" not in node["reasoners"][0]  # only what we serve back
    assert node["skills"] == [{"id": "lookup", "input_schema": {"type": "object"}, "tags": []}]
    assert (await client.get("/api/v1/nodes/sdk-node")).json() == node


async def test_reregistration_replaces_the_entry(client: httpx.AsyncClient) -> None:
    await client.post("/api/v1/nodes/register", json=SDK_DOCUMENT)
    restarted = {**SDK_DOCUMENT, "instance_id": "inst-2", "base_url": "http://127.0.0.1:2"}
    restarted["reasoners"] = [{"id": "triage2"}]
    assert (await client.post("/api/v1/nodes/register", json=restarted)).status_code == 201
    (node,) = (await client.get("/api/v1/nodes")).json()["nodes"]
    assert node["instance_id"] == "inst-2" and node["base_url"] == "http://127.0.0.1:2"
    assert node["reasoners"] == [{"id": "triage2"}]


async def test_heartbeat_health_shutdown(client: httpx.AsyncClient) -> None:
    await client.post("/api/v1/nodes/register", json=SDK_DOCUMENT)
    beat = await client.post(
        "/api/v1/nodes/sdk-node/heartbeat", json={"status": "degraded", "version": "1.2.4"}
    )
    assert beat.status_code == 200 and beat.json()["success"] is True
    health = (await client.get("/api/v1/nodes/sdk-node/health")).json()
    assert health["health_status"] == "active" and health["lifecycle_status"] == "degraded"
    assert (await client.post("/api/v1/nodes/sdk-node/heartbeat")).status_code == 200  # no body
    down = await client.post("/api/v1/nodes/sdk-node/shutdown")
    assert down.status_code == 200 and down.json()["lifecycle_status"] == "offline"
    health = (await client.get("/api/v1/nodes/sdk-node/health")).json()
    assert health["health_status"] == "inactive"
    active = (await client.get("/api/v1/nodes", params={"health_status": "active"})).json()
    assert active == {"nodes": [], "count": 0}
    for path in ("/nodes/ghost/heartbeat", "/nodes/ghost/shutdown"):
        missing = await client.post("/api/v1" + path)
        assert missing.status_code == 404 and error_body(missing)["code"] == "node_not_found"
    missing = await client.get("/api/v1/nodes/ghost/health")
    assert missing.status_code == 404 and error_body(missing)["code"] == "node_not_found"


async def test_a_node_that_stops_heartbeating_becomes_inactive(database_url: str) -> None:
    service = create_memory_app(database_url, node_inactive_after_seconds=0.3)
    await service.start()
    try:
        transport = httpx.ASGITransport(app=service.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            await client.post("/api/v1/nodes/register", json=SDK_DOCUMENT)
            ours = {"node_id": "ours", "base_url": "http://127.0.0.1:1", "reasoners": ["r"]}
            await client.post("/api/v1/nodes/register", json=ours)
            await client.post("/api/v1/nodes/sdk-node/heartbeat")
            assert await health_of(client, "sdk-node") == "active"
            for _ in range(100):  # polled: it turns inactive once 0.3 s have passed
                if await health_of(client, "sdk-node") == "inactive":
                    break
                await asyncio.sleep(0.05)
            assert await health_of(client, "sdk-node") == "inactive"
            # ours never announced heartbeats: it stays active
            assert await health_of(client, "ours") == "active"
            await client.post("/api/v1/nodes/sdk-node/heartbeat")
            assert await health_of(client, "sdk-node") == "active"
    finally:
        await service.stop()


async def health_of(client: httpx.AsyncClient, node_id: str) -> str:
    reply = await client.get(f"/api/v1/nodes/{node_id}/health")
    return str(reply.json()["health_status"])


async def test_discovery_capabilities(client: httpx.AsyncClient) -> None:
    await client.post("/api/v1/nodes/register", json=SDK_DOCUMENT)
    await client.post(
        "/api/v1/nodes/register",
        json={"node_id": "ours", "base_url": "http://127.0.0.1:3", "reasoners": ["r"]},
    )
    found = (await client.get("/api/v1/discovery/capabilities")).json()
    assert found["total_agents"] == 2 and found["total_reasoners"] == 2
    assert found["total_skills"] == 1
    by_tag = (await client.get("/api/v1/discovery/capabilities", params={"tags": "support"})).json()
    (agent,) = by_tag["capabilities"]
    assert agent["agent_id"] == "sdk-node"
    assert agent["reasoners"][0]["invocation_target"] == "sdk-node.triage"
    one = await client.get("/api/v1/discovery/capabilities", params={"agent": "ours"})
    assert [a["agent_id"] for a in one.json()["capabilities"]] == ["ours"]
    xml = await client.get("/api/v1/discovery/capabilities", params={"format": "xml"})
    assert xml.status_code == 400 and error_body(xml)["code"] == "invalid_parameter"
    bad = await client.get("/api/v1/discovery/capabilities", params={"limit": "x"})
    assert bad.status_code == 400 and error_body(bad)["code"] == "invalid_parameter"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"id": ""},
        {"id": "n", "base_url": "ftp://x"},
        {"id": "n", "skills": "s"},
        {"id": "n", "skills": [{"id": ""}]},
        {"id": "n", "metadata": [1]},
    ],
)
async def test_bad_registrations_are_400(
    client: httpx.AsyncClient, body: dict[str, object]
) -> None:
    reply = await client.post("/api/v1/nodes/register", json=body)
    assert reply.status_code == 400
    error_body(reply)
    assert (await client.get("/api/v1/nodes")).json()["count"] == 0


async def test_execution_status_routes_reject_bad_input(client: httpx.AsyncClient) -> None:
    missing = await client.get("/api/v1/executions/exec-nope")
    assert missing.status_code == 404 and error_body(missing)["code"] == "execution_not_found"
    posted = await client.post("/api/v1/executions/exec-nope/status", json={"status": "succeeded"})
    assert posted.status_code == 404
    bad = await client.post("/api/v1/executions/exec-nope/status", json={"status": "exploded"})
    assert bad.status_code == 400 and error_body(bad)["code"] == "invalid_parameter"
    unknown = await client.post("/api/v1/execute/async/ghost.r", json={"input": {}})
    assert unknown.status_code == 404 and error_body(unknown)["code"] == "node_not_found"
    await client.post("/api/v1/nodes/register", json=SDK_DOCUMENT)
    no_name = await client.post("/api/v1/execute/async/sdk-node.nope", json={"input": {}})
    assert no_name.status_code == 404 and error_body(no_name)["code"] == "reasoner_not_found"


@pytest.mark.parametrize(
    ("method", "path", "feature"),
    [
        ("GET", "/api/v1/did/agentfield-server", "DIDs"),
        ("POST", "/api/v1/vc/verify", "verifiable credentials"),
        ("POST", "/api/v1/agents/n/executions/e/request-approval", "approvals"),
        ("GET", "/api/ui/v1/dashboard", "web UI"),
        ("POST", "/api/v1/executions/note", "notes"),
        ("POST", "/api/v1/workflow/executions/events", "DAG"),
        ("POST", "/api/v1/nodes/register-serverless", "serverless"),
        ("POST", "/api/v1/executions/batch-status", "batch"),
    ],
)
async def test_out_of_scope_features_are_501_with_the_error_body(
    client: httpx.AsyncClient, service: MemoryService, method: str, path: str, feature: str
) -> None:
    reply = await client.request(method, path, json={})
    assert reply.status_code == 501, reply.text
    body = error_body(reply)
    assert body["code"] == "not_implemented" and feature in str(body["error"])
    assert (await client.get("/api/v1/nowhere")).status_code == 404  # a plain 404 stays one
