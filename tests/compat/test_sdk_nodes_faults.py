"""Public-SDK nodes when things go wrong: a node restarted, a callee that never reports,
a control-plane restart during an asynchronous execution, two control-plane instances on
one PostgreSQL. Separate processes on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentfield_asgi.testing import ServerProcess
from agentfield_asgi.testing.servers import free_port

from .sdk_nodes import SDKNode, wait_registered

TICKET = {"ticket_id": "T-5", "priority": "low", "category": "billing"}
TERMINAL = ("succeeded", "failed", "cancelled", "timeout")


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=60) as client:
        yield client


async def poll(http: httpx.AsyncClient, cp: str, execution_id: str) -> dict[str, Any]:
    for _ in range(600):
        reply = await http.get(f"{cp}/api/v1/executions/{execution_id}")
        if reply.status_code == 200 and reply.json()["status"] in TERMINAL:
            body: dict[str, Any] = reply.json()
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"{execution_id} never ended: {reply.text}")


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'memory.db'}"


async def test_a_node_restarted_and_reregistered(http: httpx.AsyncClient, tmp_path: Path) -> None:
    with ServerProcess(["--database-url", sqlite_url(tmp_path)]) as cp:
        with SDKNode("sdk_support", cp.url):
            first = SDKNode("sdk_specialist", cp.url).start()
            try:
                wait_registered(cp.url, "support-agent", "specialist-agent")
                before = (await http.get(f"{cp.url}/api/v1/nodes/specialist-agent")).json()
            finally:
                first.stop()
            # down: the caller gets a failed status with the reason at once, never a hang
            started = time.monotonic()
            down = await http.post(
                f"{cp.url}/api/v1/execute/specialist-agent.handle_billing", json={"input": {}}
            )
            assert down.status_code == 502 and down.json()["code"] == "node_unreachable"
            assert time.monotonic() - started < 10
            chained = await http.post(
                f"{cp.url}/api/v1/execute/support-agent.handle_ticket", json={"input": TICKET}
            )
            assert chained.status_code == 502 and "specialist-agent" in chained.json()["error"]
            # restarted on another port: re-registering replaces the entry
            with SDKNode("sdk_specialist", cp.url):
                for _ in range(200):
                    after = (await http.get(f"{cp.url}/api/v1/nodes/specialist-agent")).json()
                    if after["instance_id"] != before["instance_id"]:
                        break
                    await asyncio.sleep(0.05)
                assert after["instance_id"] != before["instance_id"]
                assert after["base_url"] != before["base_url"]
                listed = (await http.get(f"{cp.url}/api/v1/nodes")).json()
                assert [n["id"] for n in listed["nodes"]].count("specialist-agent") == 1
                ok = await http.post(
                    f"{cp.url}/api/v1/execute/support-agent.handle_ticket", json={"input": TICKET}
                )
                assert ok.status_code == 200, ok.text
                assert ok.json()["result"]["specialist"]["ticket_priority"] == "low"


async def test_nodes_with_an_api_key(http: httpx.AsyncClient, tmp_path: Path) -> None:
    """``--api-key`` on the control plane, ``AGENTFIELD_API_KEY`` on the nodes (the SDK reads
    it): registration, heartbeats, memory, app.call and status callbacks all carry it."""
    key = {"AGENTFIELD_API_KEY": "k-17"}
    with ServerProcess(["--database-url", sqlite_url(tmp_path), "--api-key", "k-17"]) as cp:
        with SDKNode("sdk_support", cp.url, env=key), SDKNode("sdk_specialist", cp.url, env=key):
            wait_registered(cp.url, "support-agent", "specialist-agent", api_key="k-17")
            url = f"{cp.url}/api/v1/execute/support-agent.handle_ticket"
            refused = await http.post(url, json={"input": TICKET})
            assert refused.status_code == 401
            reply = await http.post(url, json={"input": TICKET}, headers={"X-API-Key": "k-17"})
            assert reply.status_code == 200, reply.text
            assert reply.json()["result"]["specialist"]["ticket_priority"] == "low"


async def test_a_callee_that_never_reports_fails_at_the_deadline(
    http: httpx.AsyncClient, tmp_path: Path
) -> None:
    args = ["--database-url", sqlite_url(tmp_path), "--execute-timeout", "1.5"]
    with ServerProcess(args) as cp, SDKNode("sdk_specialist", cp.url):
        wait_registered(cp.url, "specialist-agent")
        started = time.monotonic()
        sync = await http.post(
            f"{cp.url}/api/v1/execute/specialist-agent.slow", json={"input": {"seconds": 6}}
        )
        assert time.monotonic() - started < 5
        assert sync.status_code == 504
        body = sync.json()
        assert set(body) == {"error", "code", "details"} and "deadline" in body["error"]
        assert body["details"]["error_details"]["reason"] == "deadline"
        submitted = await http.post(
            f"{cp.url}/api/v1/execute/async/specialist-agent.slow", json={"input": {"seconds": 6}}
        )
        started = time.monotonic()
        failed = await poll(http, cp.url, submitted.json()["execution_id"])
        assert time.monotonic() - started < 5
        assert failed["status"] == "failed" and failed["error_details"]["reason"] == "deadline"
        # the node's late outcome does not overwrite the first one
        late = await http.post(
            f"{cp.url}/api/v1/executions/{failed['execution_id']}/status",
            json={"status": "succeeded", "result": {"slept": 6}},
        )
        assert late.status_code == 409 and late.json()["code"] == "execution_finished"
        assert (await poll(http, cp.url, failed["execution_id"]))["status"] == "failed"


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_control_plane_restart_during_an_async_execution(
    http: httpx.AsyncClient, tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    url = (
        sqlite_url(tmp_path)
        if backend == "sqlite"
        else request.getfixturevalue("pg_cluster").create_database()
    )
    port = free_port()
    cp = ServerProcess(["--database-url", url], port=port).start()
    try:
        with SDKNode("sdk_specialist", cp.url):
            wait_registered(cp.url, "specialist-agent")
            submitted = await http.post(
                f"{cp.url}/api/v1/execute/async/specialist-agent.slow",
                json={"input": {"seconds": 2.5}},
            )
            assert submitted.status_code == 202
            execution_id = submitted.json()["execution_id"]
            cp.stop()  # while the node works; it posts its outcome later
            cp = ServerProcess(["--database-url", url], port=port).start()
            done = await poll(http, cp.url, execution_id)
            assert done["status"] == "succeeded" and done["result"] == {"slept": 2.5}
            workflow = (await http.get(f"{cp.url}/api/v1/workflows/{done['workflow_id']}")).json()
            assert workflow["status"] == "succeeded"
    finally:
        cp.stop()


async def test_two_control_planes_on_one_postgres(http: httpx.AsyncClient, pg_cluster: Any) -> None:
    url = pg_cluster.create_database()
    with ServerProcess(["--database-url", url]) as a, ServerProcess(["--database-url", url]) as b:
        # the nodes know only A; B shares its registry and execution records
        with SDKNode("sdk_support", a.url), SDKNode("sdk_specialist", a.url):
            wait_registered(a.url, "support-agent", "specialist-agent")
            wait_registered(b.url, "support-agent", "specialist-agent")
            # through B: the nodes post their outcomes to A, B's waiter sees them
            reply = await http.post(
                f"{b.url}/api/v1/execute/support-agent.handle_ticket", json={"input": TICKET}
            )
            assert reply.status_code == 200, reply.text
            body = reply.json()
            assert body["result"]["specialist"]["ticket_category"] == "billing"
            keys = await http.get(
                f"{b.url}/api/v1/memory/list",
                params={"scope": "workflow"},
                headers={"X-Workflow-ID": body["workflow_id"]},
            )
            assert keys.json() == []
            # submitted to A, polled on B
            submitted = await http.post(
                f"{a.url}/api/v1/execute/async/specialist-agent.slow",
                json={"input": {"seconds": 0.3}},
            )
            done = await poll(http, b.url, submitted.json()["execution_id"])
            assert done["status"] == "succeeded" and done["result"] == {"slept": 0.3}
