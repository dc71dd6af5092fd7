"""AgentField's own agent nodes (the public ``agentfield`` SDK, unchanged) against our
control plane: the control plane and two SDK nodes are separate processes on loopback.

The nodes are ``tests/compat/nodes/sdk_support.py`` and ``sdk_specialist.py``: the
support -> specialist example as AgentField documents it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from agentfield_asgi.testing import ServerProcess

from .sdk_nodes import SDKNode, wait_registered

try:  # a test dependency ([test] extra); missing is a failure, never a skip
    from agentfield.client import AgentFieldClient
except ImportError as exc:  # pragma: no cover - environment problem
    pytest.fail(f"the AgentField SDK is needed: pip install -e '.[test]' ({exc})", pytrace=False)

NODE_IDS = ("support-agent", "specialist-agent")
TICKET = {"ticket_id": "T-1", "priority": "high", "category": "billing"}


@dataclass
class Cluster:
    control_plane: ServerProcess
    support: SDKNode
    specialist: SDKNode


def database_for(backend: str, request: pytest.FixtureRequest, tmp: pytest.TempPathFactory) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp.mktemp('cp') / 'memory.db'}"
    return str(request.getfixturevalue("pg_cluster").create_database())


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    url = database_for(request.param, request, tmp_path_factory)
    control_plane = ServerProcess(["--database-url", url]).start()
    nodes: list[SDKNode] = []
    try:
        nodes = [SDKNode(s, control_plane.url).start() for s in ("sdk_support", "sdk_specialist")]
        wait_registered(control_plane.url, *NODE_IDS)
        yield Cluster(control_plane, *nodes)
    finally:
        for server in [*nodes, control_plane]:
            server.stop()


@pytest.fixture
async def cp(cluster: Cluster) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=cluster.control_plane.url, timeout=60) as client:
        yield client


async def workflow_keys(cp: httpx.AsyncClient, workflow_id: str) -> list[str]:
    reply = await cp.get(
        "/api/v1/memory/list", params={"scope": "workflow"}, headers={"X-Workflow-ID": workflow_id}
    )
    assert reply.status_code == 200
    return [item["key"] for item in reply.json()]


async def poll(cp: httpx.AsyncClient, execution_id: str, seconds: float = 30) -> dict[str, Any]:
    """GET /executions/{id} until it is terminal, as the SDK's own poller does."""
    for _ in range(int(seconds / 0.05)):
        body: dict[str, Any] = (await cp.get(f"/api/v1/executions/{execution_id}")).json()
        if body["status"] in ("succeeded", "failed", "cancelled", "timeout"):
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"execution {execution_id} did not end: {body}")


async def test_sdk_nodes_register_in_agentfield_shapes(cp: httpx.AsyncClient) -> None:
    nodes = {n["id"]: n for n in (await cp.get("/api/v1/nodes")).json()["nodes"]}
    support = nodes["support-agent"]
    assert support["health_status"] == "active" and support["instance_id"]
    reasoners = {r["id"]: r for r in support["reasoners"]}
    assert set(reasoners) >= {"handle_ticket", "relay_token", "escalate"}
    assert reasoners["handle_ticket"]["input_schema"]["required"] == [
        "ticket_id",
        "priority",
        "category",
    ]
    assert [s["id"] for s in support["skills"]] == ["shout"]
    beat = (await cp.get("/api/v1/nodes/support-agent/health")).json()
    assert beat["health_status"] == "active"
    # what app.discover() reads, through the SDK's own client and types
    client = AgentFieldClient(base_url=str(cp.base_url).rstrip("/"))
    found = await asyncio.to_thread(
        client.discover_capabilities, tags=[], reasoner="handle_billing"
    )
    assert found.json is not None
    (agent,) = found.json.capabilities
    assert agent.agent_id == "specialist-agent" and agent.health_status == "active"
    assert [r.invocation_target for r in agent.reasoners] == ["specialist-agent.handle_billing"]
    await client.aclose()


async def test_seed_example_sync_memory_flows_and_is_cleaned(cp: httpx.AsyncClient) -> None:
    reply = await cp.post(
        "/api/v1/execute/support-agent.handle_ticket",
        json={"input": TICKET},
        headers={"X-Session-ID": "customer-42"},
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    workflow_id = body["workflow_id"]
    assert body["status"] == "succeeded" and body["run_id"] == workflow_id
    result = body["result"]
    specialist = result["specialist"]
    # written by support-agent, read by specialist-agent through app.call: one workflow memory
    assert specialist["ticket_priority"] == "high" and specialist["ticket_category"] == "billing"
    assert specialist["workflow_id"] == workflow_id == result["workflow_id"]
    assert specialist["parent_execution_id"] == body["execution_id"]
    assert specialist["session_id"] == "customer-42"
    assert result["priority_after_call"] == "high"
    # the root ended: its workflow memory is gone, with a delete event per key
    assert await workflow_keys(cp, workflow_id) == []
    history = await cp.get(
        "/api/v1/memory/events/history", params={"scope": "workflow", "scope_id": workflow_id}
    )
    deletes = sorted(e["key"] for e in history.json() if e["action"] == "delete")
    assert deletes == ["ticket_category", "ticket_priority"]
    workflow = (await cp.get(f"/api/v1/workflows/{workflow_id}")).json()
    assert workflow["status"] == "succeeded"
    assert {e["target"]: e["status"] for e in workflow["executions"]} == {
        "support-agent.handle_ticket": "succeeded",
        "specialist-agent.handle_billing": "succeeded",
    }


async def test_async_from_outside_with_polling(cp: httpx.AsyncClient) -> None:
    reply = await cp.post(
        "/api/v1/execute/async/support-agent.handle_ticket", json={"input": TICKET}
    )
    assert reply.status_code == 202
    submitted = reply.json()
    assert submitted["status"] == "queued" and submitted["target"] == "support-agent.handle_ticket"
    assert submitted["run_id"] == submitted["workflow_id"] and submitted["type"] == "reasoner"
    done = await poll(cp, submitted["execution_id"])
    assert done["status"] == "succeeded" and done["error"] is None
    assert done["result"]["specialist"]["ticket_priority"] == "high"
    assert done["duration_ms"] >= 0 and done["completed_at"] >= done["started_at"]
    assert await workflow_keys(cp, submitted["workflow_id"]) == []


async def test_the_public_sdk_client_executes_and_polls(cluster: Cluster) -> None:
    """``AgentFieldClient.execute`` (submit async, poll) from outside any node."""
    client = AgentFieldClient(base_url=cluster.control_plane.url)
    try:
        out = await client.execute("support-agent.handle_ticket", dict(TICKET))
        assert out["status"] == "succeeded", out
        assert out["result"]["specialist"]["ticket_category"] == "billing"
        # its X-Run-ID became the workflow: the root of that run, cleaned at the end
        assert out["result"]["workflow_id"] == out["run_id"]
        skill = await client.execute("support-agent.shout", {"text": "hi"})
        assert skill["result"] == {"text": "HI"} and skill["type"] == "skill"
    finally:
        await client.aclose()
    async with httpx.AsyncClient(base_url=cluster.control_plane.url) as cp:
        assert await workflow_keys(cp, out["run_id"]) == []


async def test_workflows_never_see_each_others_memory(cp: httpx.AsyncClient) -> None:
    seen = []
    for token in ("alpha", "beta", "gamma"):
        reply = await cp.post(
            "/api/v1/execute/support-agent.relay_token", json={"input": {"token": token}}
        )
        assert reply.status_code == 200, reply.text
        seen.append(reply.json()["result"])
    assert seen == [{"mine": t, "specialist_saw": t} for t in ("alpha", "beta", "gamma")]


async def test_a_failing_callee(cp: httpx.AsyncClient) -> None:
    # from inside a node: the SDK's app.call raises with the callee's message
    reply = await cp.post(
        "/api/v1/execute/support-agent.escalate", json={"input": {"reason": "card declined"}}
    )
    assert reply.status_code == 200, reply.text
    assert "card declined" in reply.json()["result"]["message"]
    # from outside, sync: the protocol's error body; async: a failed status with the reason
    direct = await cp.post(
        "/api/v1/execute/specialist-agent.fail", json={"input": {"reason": "boom"}}
    )
    assert direct.status_code == 502
    assert set(direct.json()) == {"error", "code", "details"} and "boom" in direct.json()["error"]
    submitted = await cp.post(
        "/api/v1/execute/async/specialist-agent.fail", json={"input": {"reason": "bang"}}
    )
    failed = await poll(cp, submitted.json()["execution_id"])
    assert failed["status"] == "failed" and "bang" in failed["error"]
    workflow = (await cp.get(f"/api/v1/workflows/{submitted.json()['workflow_id']}")).json()
    assert workflow["status"] == "failed"


async def test_unknown_targets_are_404_with_the_error_body(cp: httpx.AsyncClient) -> None:
    for path in ("/execute/ghost.r", "/execute/async/ghost.r", "/execute/support-agent.nope"):
        reply = await cp.post("/api/v1" + path, json={"input": {}})
        assert reply.status_code == 404
        assert set(reply.json()) == {"error", "code", "details"}
