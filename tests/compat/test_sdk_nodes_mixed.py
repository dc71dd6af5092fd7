"""Mixed workflows: our ``Agent`` and public-SDK nodes call each other, in both directions,
inside one workflow; and what concurrent executions on one node do on each SDK."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentfield_asgi.testing import ServerProcess, agent_server

from .sdk_nodes import SDKNode, wait_registered

ROOT = Path(__file__).resolve().parents[2]
TICKET = {"ticket_id": "T-9", "priority": "urgent", "category": "refund"}
SESSION = {"X-Session-ID": "customer-7"}


def ours(module: str, control_plane: ServerProcess) -> ServerProcess:
    return agent_server(f"{module}:app", control_plane.url, cwd=str(ROOT))


@pytest.fixture(scope="module")
def ours_calls_sdk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Our support-agent (tests/agent/seed_support.py) -> the SDK's specialist-agent."""
    db = tmp_path_factory.mktemp("mixed-a") / "memory.db"
    with ServerProcess(["--database-url", f"sqlite:///{db}"]) as cp:
        with ours("tests.agent.seed_support", cp), SDKNode("sdk_specialist", cp.url):
            wait_registered(cp.url, "support-agent", "specialist-agent")
            yield cp.url


@pytest.fixture(scope="module")
def sdk_calls_ours(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The SDK's support-agent -> our specialist-agent (tests/agent/seed_specialist.py);
    and our memo-agent beside them."""
    db = tmp_path_factory.mktemp("mixed-b") / "memory.db"
    with ServerProcess(["--database-url", f"sqlite:///{db}"]) as cp:
        with SDKNode("sdk_support", cp.url), ours("tests.agent.seed_specialist", cp):
            with ours("tests.compat.nodes.ours_memo", cp):
                wait_registered(cp.url, "support-agent", "specialist-agent", "memo-agent")
                yield cp.url


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=60) as client:
        yield client


async def execute(http: httpx.AsyncClient, cp: str, target: str, **kwargs: Any) -> dict[str, Any]:
    reply = await http.post(
        f"{cp}/api/v1/execute/{target}", json={"input": kwargs}, headers=SESSION
    )
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


async def workflow_keys(http: httpx.AsyncClient, cp: str, workflow_id: str) -> list[str]:
    reply = await http.get(
        f"{cp}/api/v1/memory/list",
        params={"scope": "workflow"},
        headers={"X-Workflow-ID": workflow_id},
    )
    return [item["key"] for item in reply.json()]


async def test_our_agent_calls_an_sdk_node(http: httpx.AsyncClient, ours_calls_sdk: str) -> None:
    body = await execute(http, ours_calls_sdk, "support-agent.handle_ticket", **TICKET)
    result = body["result"]
    specialist = result["specialist"]
    assert specialist["ticket_priority"] == "urgent" and specialist["ticket_category"] == "refund"
    assert specialist["customer_tier"] == "gold"  # our node's session write, read by the SDK's
    assert specialist["workflow_id"] == result["workflow_id"] == body["workflow_id"]
    assert specialist["parent_execution_id"] == result["execution_id"]
    assert specialist["session_id"] == "customer-7"
    assert await workflow_keys(http, ours_calls_sdk, body["workflow_id"]) == []
    # a failing SDK callee reaches our Agent.call as ExecutionError with its message
    escalated = (await execute(http, ours_calls_sdk, "support-agent.escalate", reason="no funds"))[
        "result"
    ]
    assert escalated["type"] == "ExecutionError" and "no funds" in escalated["message"]


async def test_an_sdk_node_calls_our_agent(http: httpx.AsyncClient, sdk_calls_ours: str) -> None:
    body = await execute(http, sdk_calls_ours, "support-agent.handle_ticket", **TICKET)
    result = body["result"]
    specialist = result["specialist"]
    assert specialist["ticket_priority"] == "urgent" and specialist["ticket_category"] == "refund"
    assert specialist["workflow_id"] == result["workflow_id"] == body["workflow_id"]
    assert specialist["session_id"] == "customer-7"
    assert await workflow_keys(http, sdk_calls_ours, body["workflow_id"]) == []
    relayed = await execute(http, sdk_calls_ours, "support-agent.relay_token", token="t-1")
    assert relayed["result"] == {"mine": "t-1", "specialist_saw": "t-1"}


async def concurrent_remember(http: httpx.AsyncClient, cp: str, target: str) -> list[Any]:
    """Three workflows at once on one node, each writing its token then reading it back."""

    async def one(token: str) -> Any:
        reply = await http.post(
            f"{cp}/api/v1/execute/async/{target}", json={"input": {"token": token, "pause": 0.5}}
        )
        execution_id = reply.json()["execution_id"]
        for _ in range(400):
            status = (await http.get(f"{cp}/api/v1/executions/{execution_id}")).json()
            if status["status"] in ("succeeded", "failed"):
                return status["result"]["mine"] if status["status"] == "succeeded" else status
            await asyncio.sleep(0.05)
        raise AssertionError(f"{execution_id} never ended")

    return list(await asyncio.gather(*(one(t) for t in ("t-a", "t-b", "t-c"))))


async def test_concurrent_executions_on_one_node(
    http: httpx.AsyncClient, sdk_calls_ours: str
) -> None:
    # Our Agent keeps the execution context per task: three at once each read their own.
    assert await concurrent_remember(http, sdk_calls_ours, "memo-agent.remember") == [
        "t-a",
        "t-b",
        "t-c",
    ]
    # The public SDK 0.1.144 keeps it in an attribute of the Agent instance: whatever the
    # control plane does, overlapping executions on one SDK node lose or mix their memory
    # context (docs/compatibility.md). Every one still ends (failed or succeeded), promptly.
    outcomes = await concurrent_remember(http, sdk_calls_ours, "support-agent.remember")
    assert len(outcomes) == 3
    print("SDK node, 3 concurrent executions:", outcomes)
