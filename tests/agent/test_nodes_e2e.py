"""The seed scenario end to end: a control plane and two agent nodes, three uvicorn
processes on loopback, on both storage backends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from agentfield_asgi.testing import ServerProcess, agent_server

ROOT = Path(__file__).resolve().parents[2]
BACKENDS = ["sqlite", "postgres"]


@dataclass
class Cluster:
    control_plane: ServerProcess
    support: ServerProcess
    specialist: ServerProcess
    existing: ServerProcess


def start_node(module: str, control_plane: ServerProcess, prefix: str = "") -> ServerProcess:
    return agent_server(
        f"tests.agent.{module}:app", control_plane.url, prefix=prefix, cwd=str(ROOT)
    )


@pytest.fixture(scope="module", params=BACKENDS)
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('control-plane') / 'memory.db'}"
    else:
        url = request.getfixturevalue("pg_cluster").create_database()
    servers: list[ServerProcess] = []
    try:
        control_plane = ServerProcess(["--database-url", url]).start()
        servers.append(control_plane)
        for module in ("seed_support", "seed_specialist"):
            servers.append(start_node(module, control_plane).start())
        servers.append(start_node("seed_existing_service", control_plane, "/agent").start())
        yield Cluster(*servers)
    finally:
        for server in reversed(servers):
            server.stop()


@pytest.fixture
async def cp(cluster: Cluster) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=cluster.control_plane.url, timeout=60) as client:
        yield client


async def execute(
    cp: httpx.AsyncClient, target: str, headers: dict[str, str] | None = None, /, **kwargs: object
) -> httpx.Response:
    return await cp.post(f"/api/v1/execute/{target}", json={"input": kwargs}, headers=headers)


async def workflow_keys(cp: httpx.AsyncClient, workflow_id: str) -> list[str]:
    reply = await cp.get(
        "/api/v1/memory/list", params={"scope": "workflow"}, headers={"X-Workflow-ID": workflow_id}
    )
    assert reply.status_code == 200
    return [item["key"] for item in reply.json()]


async def test_nodes_registered(cp: httpx.AsyncClient, cluster: Cluster) -> None:
    nodes = {n["node_id"]: n for n in (await cp.get("/api/v1/nodes")).json()["nodes"]}
    assert nodes["support-agent"]["base_url"] == cluster.support.url
    assert {"id": "handle_ticket"} in nodes["support-agent"]["reasoners"]
    assert [r["id"] for r in nodes["specialist-agent"]["reasoners"]] == [
        "echo_token",
        "fail",
        "handle_billing",
    ]


async def test_seed_scenario(cp: httpx.AsyncClient) -> None:
    session = {"X-Session-ID": "customer-42"}
    first = await execute(
        cp,
        "support-agent.handle_ticket",
        session,
        ticket_id="T-1",
        priority="high",
        category="billing",
    )
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["status"] == "succeeded"
    workflow_id = body["workflow_id"]
    assert workflow_id.startswith("wf-")
    result = body["result"]
    specialist = result["specialist"]

    # The specialist, in another process, read both values from the shared workflow memory.
    assert specialist["ticket_priority"] == "high"
    assert specialist["ticket_category"] == "billing"
    assert specialist["workflow_id"] == result["workflow_id"] == workflow_id
    assert specialist["session_id"] == "customer-42"
    # ... as a child execution of the support agent's root execution.
    assert result["execution_id"] == body["execution_id"]
    assert specialist["parent_execution_id"] == body["execution_id"]
    assert result["priority_after_call"] == "high"
    # The session value is visible to the specialist; node A's actor memory is not.
    assert specialist["customer_tier"] == "gold"
    assert specialist["agent_style"] is None
    assert result["own_style"] == "formal"

    # The root execution returned: the workflow is complete and its keys are gone.
    assert await workflow_keys(cp, workflow_id) == []
    miss = await cp.post(
        "/api/v1/memory/get",
        json={"key": "ticket_priority", "scope": "workflow"},
        headers={"X-Workflow-ID": workflow_id},
    )
    assert miss.status_code == 404
    record = (await cp.get(f"/api/v1/workflows/{workflow_id}")).json()
    assert record["status"] == "succeeded"
    assert record["root_execution_id"] == body["execution_id"]
    executions = {e["execution_id"]: e for e in record["executions"]}
    child = executions[specialist["execution_id"]]
    assert (child["node_id"], child["reasoner"], child["status"]) == (
        "specialist-agent",
        "handle_billing",
        "succeeded",
    )
    assert child["parent_execution_id"] == body["execution_id"]

    # A second workflow in the same session sees none of workflow 1's keys, but the session value.
    second = await execute(cp, "specialist-agent.handle_billing", session, ticket_id="T-2")
    assert second.status_code == 200, second.text
    other = second.json()["result"]
    assert second.json()["workflow_id"] != workflow_id
    assert other["ticket_priority"] is None and other["ticket_category"] is None
    assert other["customer_tier"] == "gold"
    assert other["agent_style"] is None

    # Session and actor memory outlive the workflow.
    tier = await cp.post(
        "/api/v1/memory/get", json={"key": "customer_tier", "scope": "session"}, headers=session
    )
    assert tier.json()["data"] == "gold"
    style = await cp.post(
        "/api/v1/memory/get",
        json={"key": "agent_style", "scope": "actor"},
        headers={"X-Actor-ID": "support-agent"},
    )
    assert style.json()["data"] == "formal"


async def test_concurrent_workflows_never_see_each_other(cp: httpx.AsyncClient) -> None:
    tokens = [f"token-{i}" for i in range(12)]
    replies = await asyncio.gather(
        *(execute(cp, "support-agent.relay_token", token=t) for t in tokens)
    )
    workflows = set()
    for token, reply in zip(tokens, replies, strict=True):
        assert reply.status_code == 200, reply.text
        assert reply.json()["result"] == {"mine": token, "specialist_saw": token}
        workflows.add(reply.json()["workflow_id"])
    assert len(workflows) == len(tokens)
    for workflow_id in workflows:
        assert await workflow_keys(cp, workflow_id) == []


async def test_callee_errors_reach_the_caller(cp: httpx.AsyncClient) -> None:
    escalated = await execute(cp, "support-agent.escalate", reason="billing system down")
    assert escalated.status_code == 200, escalated.text
    assert escalated.json()["result"] == {
        "type": "ExecutionError",
        "message": "billing system down",
        "status": 502,
    }

    failed = await execute(cp, "specialist-agent.fail", reason="ledger locked")
    assert failed.status_code == 502
    error = failed.json()
    assert error["error"] == "ledger locked"
    assert error["code"] == "execution_failed"
    assert error["details"]["error_code"] == "reasoner_error"
    workflow = (await cp.get(f"/api/v1/workflows/{error['details']['workflow_id']}")).json()
    assert workflow["status"] == "failed"
    assert workflow["error"] == "ledger locked"


async def test_unknown_targets_are_clear_404s(cp: httpx.AsyncClient) -> None:
    node = await execute(cp, "ghost-agent.anything")
    assert node.status_code == 404 and node.json()["code"] == "node_not_found"
    reasoner = await execute(cp, "specialist-agent.no_such_reasoner")
    assert reasoner.status_code == 404 and reasoner.json()["code"] == "reasoner_not_found"
    bad = await execute(cp, "no-dot-here")
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_target"
    from_node = await execute(cp, "support-agent.call_unknown", target="ghost-agent.x")
    assert from_node.json()["result"]["status"] == 404
    assert from_node.json()["result"]["code"] == "node_not_found"


async def test_direct_call_to_a_node_is_its_own_workflow(
    cp: httpx.AsyncClient, cluster: Cluster
) -> None:
    async with httpx.AsyncClient(base_url=cluster.support.url, timeout=60) as node:
        reply = await node.post(
            "/reasoners/handle_ticket",
            json={"ticket_id": "T-3", "priority": "low", "category": "refund"},
            headers={"X-Session-ID": "customer-7"},
        )
    assert reply.status_code == 200, reply.text
    result = reply.json()
    assert result["specialist"]["ticket_category"] == "refund"
    assert result["specialist"]["session_id"] == "customer-7"
    workflow_id = result["workflow_id"]
    assert await workflow_keys(cp, workflow_id) == []
    assert (await cp.get(f"/api/v1/workflows/{workflow_id}")).json()["status"] == "succeeded"


async def test_node_rejects_bad_input(cluster: Cluster) -> None:
    async with httpx.AsyncClient(base_url=cluster.specialist.url, timeout=60) as node:
        wrong_args = await node.post("/reasoners/fail", json={"nope": 1})
        not_object = await node.post("/reasoners/fail", json=[1])
        missing = await node.post("/reasoners/missing", json={})
    assert wrong_args.status_code == 400 and wrong_args.json()["code"] == "invalid_input"
    assert not_object.status_code == 400 and not_object.json()["code"] == "invalid_input"
    assert missing.status_code == 404 and missing.json()["code"] == "reasoner_not_found"


async def test_existing_service_with_middleware_and_agent(
    cp: httpx.AsyncClient, cluster: Cluster
) -> None:
    async with httpx.AsyncClient(base_url=cluster.existing.url, timeout=60) as service:
        reply = await service.post("/checkout")
    assert reply.status_code == 200, reply.text
    body = reply.json()
    # The plain route's memory writes reached the specialist, in another process,
    # and the mounted agent's own reasoner, with no context passed by hand.
    assert body["specialist"]["ticket_priority"] == "urgent"
    assert body["specialist"]["ticket_category"] == "orders"
    assert body["specialist"]["workflow_id"] == body["workflow_id"]
    assert body["own"] == "urgent"
    # The host's middleware completes the workflow right after answering.
    workflow_id = body["workflow_id"]
    for _ in range(600):
        if (await cp.get(f"/api/v1/workflows/{workflow_id}")).json().get("status") == "succeeded":
            break
        await asyncio.sleep(0.05)
    assert (await cp.get(f"/api/v1/workflows/{workflow_id}")).json()["status"] == "succeeded"
    assert await workflow_keys(cp, workflow_id) == []
