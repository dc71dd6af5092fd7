"""Agent in process: reasoners, call(), hosted control plane, mounting, settings, hooks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from agentfield_asgi import Agent, ExecutionError, current_context
from agentfield_asgi.errors import BadRequest
from agentfield_asgi.testing import ServerProcess, free_port


def solo_agent(database_url: str, **options: object) -> Agent:
    """One node hosting its own control plane, with a few reasoners."""
    app = Agent("solo", serve_control_plane=True, database_url=database_url, **options)  # type: ignore[arg-type]

    @app.reasoner
    async def outer(x: int) -> dict:
        await app.memory.set("x", x)
        inner = await app.call("solo.inner")
        ctx = current_context()
        assert ctx is not None
        return {"inner": inner, "workflow_id": ctx.workflow_id, "execution_id": ctx.execution_id}

    @app.reasoner
    async def inner() -> dict:
        ctx = current_context()
        assert ctx is not None
        return {
            "x": await app.memory.get("x"),
            "workflow_id": ctx.workflow_id,
            "parent": ctx.parent_execution_id,
            "ids": [ctx.session_id, ctx.actor_id],
        }

    @app.reasoner(name="renamed")
    async def picky(n: int) -> int:
        if n < 0:
            raise BadRequest("n must be >= 0", code="negative")
        if n == 0:
            raise ZeroDivisionError("division by zero")
        return 100 // n

    @app.reasoner
    async def unserialisable() -> object:
        return object()

    return app


@pytest.fixture
async def solo(database_url: str) -> AsyncIterator[tuple[Agent, httpx.AsyncClient]]:
    app = solo_agent(database_url)
    async with app.lifespan():
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://solo"
        ) as client:
            yield app, client


async def test_execute_through_the_hosted_control_plane(
    solo: tuple[Agent, httpx.AsyncClient],
) -> None:
    app, client = solo
    reply = await client.post("/api/v1/execute/solo.outer", json={"input": {"x": 5}})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    result = body["result"]
    assert result["inner"] == {
        "x": 5,
        "workflow_id": body["workflow_id"],
        "parent": body["execution_id"],
        "ids": [None, None],
    }
    assert result["execution_id"] == body["execution_id"]
    assert await app.memory.workflow(body["workflow_id"]).list_keys() == []
    assert (await client.get(f"/api/v1/workflows/{body['workflow_id']}")).json()[
        "status"
    ] == "succeeded"
    assert current_context() is None


async def test_execute_from_outside_carries_session_and_actor(
    solo: tuple[Agent, httpx.AsyncClient],
) -> None:
    _, client = solo
    headers = {"X-Session-ID": "user-1", "X-Actor-ID": "person-9"}
    reply = await client.post("/api/v1/execute/solo.inner", json={"input": {}}, headers=headers)
    body = reply.json()
    assert body["result"]["ids"] == ["user-1", "person-9"]
    assert body["result"]["parent"] is None  # the root of a new workflow
    workflow = (await client.get(f"/api/v1/workflows/{body['workflow_id']}")).json()
    assert (workflow["root_execution_id"], workflow["session_id"], workflow["actor_id"]) == (
        body["execution_id"],
        "user-1",
        "person-9",
    )


async def test_direct_reasoner_call_completes_its_workflow(
    solo: tuple[Agent, httpx.AsyncClient],
) -> None:
    app, client = solo
    reply = await client.post("/reasoners/outer", json={"x": 6})
    assert reply.status_code == 200
    workflow_id = reply.json()["workflow_id"]
    assert reply.json()["inner"]["x"] == 6
    assert await app.memory.workflow(workflow_id).list_keys() == []
    workflow = (await client.get(f"/api/v1/workflows/{workflow_id}")).json()
    assert workflow["status"] == "succeeded"
    assert [e["reasoner"] for e in workflow["executions"]] == ["inner"]


async def test_reasoner_errors(solo: tuple[Agent, httpx.AsyncClient]) -> None:
    app, client = solo
    deliberate = await client.post("/reasoners/renamed", json={"n": -1})
    assert deliberate.status_code == 400 and deliberate.json()["code"] == "negative"
    crash = await client.post("/reasoners/renamed", json={"n": 0})
    assert crash.status_code == 500
    assert crash.json()["error"] == "division by zero"
    assert crash.json()["details"]["type"] == "ZeroDivisionError"
    assert (await client.post("/reasoners/renamed", json={"n": 4})).json() == 25
    assert (await client.post("/reasoners/unserialisable")).status_code == 500
    assert (await client.post("/reasoners/picky", json={"n": 1})).status_code == 404
    with pytest.raises(ExecutionError) as info:
        await app.call("solo.renamed", n=0)  # outside any request: a workflow of its own
    assert info.value.message == "division by zero"
    assert info.value.status == 502
    assert info.value.details["error_code"] == "reasoner_error"
    with pytest.raises(ExecutionError) as info:
        await app.call("solo.nothing")
    assert (info.value.status, info.value.code) == (404, "reasoner_not_found")
    assert await app.call("solo.renamed", n=50) == 2


async def test_health_lists_reasoners(solo: tuple[Agent, httpx.AsyncClient]) -> None:
    _, client = solo
    health = (await client.get("/health")).json()
    assert health == {
        "status": "ok",
        "node_id": "solo",
        "reasoners": ["inner", "outer", "renamed", "unserialisable"],
    }
    nodes = (await client.get("/api/v1/nodes")).json()["nodes"]
    assert nodes[0]["node_id"] == "solo"
    assert [r["id"] for r in nodes[0]["reasoners"]] == health["reasoners"]


@pytest.mark.parametrize("compose_lifespan", [True, False])
async def test_mounted_in_a_host_app(database_url: str, compose_lifespan: bool) -> None:
    app = solo_agent(database_url)

    @asynccontextmanager
    async def lifespan(host: Starlette) -> AsyncIterator[None]:
        async with app.lifespan(host):
            yield

    host = Starlette(
        routes=[Mount("/agent", app=app)], lifespan=lifespan if compose_lifespan else None
    )
    if compose_lifespan:
        await app.start()
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=host), base_url="http://host"
        ) as client:
            reply = await client.post("/agent/reasoners/renamed", json={"n": 10})
            assert reply.json() == 10
            assert app.started  # started by the first request when the host did not
            execute = await client.post(
                "/agent/api/v1/execute/solo.outer", json={"input": {"x": 1}}
            )
            assert execute.json()["result"]["inner"]["x"] == 1
    finally:
        await app.stop()


def test_reasoner_declarations_are_checked() -> None:
    app = Agent("n", control_plane_url="http://127.0.0.1:1")
    with pytest.raises(TypeError):

        @app.reasoner
        def sync_fn() -> None:  # type: ignore[misc]
            return None

    with pytest.raises(ValueError):
        app.reasoner(name="a.b")(_noop)
    with pytest.raises(ValueError):
        Agent("with.dot")
    assert app.reasoner(_noop) is _noop
    assert app.reasoners == ["_noop"]


async def _noop() -> None:
    return None


def test_urls_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTFIELD_CONTROL_PLANE_URL", "http://cp.example:9000/")
    monkeypatch.setenv("AGENTFIELD_PUBLIC_URL", "http://node.example:8001/")
    from_env = Agent("env-node")
    assert from_env.control_plane_url == "http://cp.example:9000"
    assert from_env.public_url == "http://node.example:8001"
    explicit = Agent("arg-node", control_plane_url="http://cp2:1", public_url="http://me:2")
    assert (explicit.control_plane_url, explicit.public_url) == ("http://cp2:1", "http://me:2")
    assert explicit.transport is Agent("other", control_plane_url="http://cp2:1").transport


async def test_hooks_run_in_order(database_url: str) -> None:
    calls: list[str] = []
    app = Agent("hooks", serve_control_plane=True, database_url=database_url)

    @app.on_start
    def first() -> None:
        calls.append("start-1")

    @app.on_start
    async def second() -> None:
        calls.append("start-2" if app.registered.is_set() else "start-2-unregistered")

    app.on_stop(lambda: calls.append("stop"))
    async with app.lifespan():
        assert calls == ["start-1", "start-2"]
    assert calls == ["start-1", "start-2", "stop"]


async def test_registers_once_the_control_plane_comes_up(database_url: str) -> None:
    port = free_port()
    app = Agent(
        "late", control_plane_url=f"http://127.0.0.1:{port}", public_url="http://127.0.0.1:1"
    )

    @app.reasoner
    async def ping() -> str:
        return "pong"

    await app.start()  # the control plane is not up: start-up does not fail
    try:
        assert not app.registered.is_set()
        with ServerProcess(["--database-url", database_url], port=port):
            await asyncio.wait_for(app.registered.wait(), timeout=120)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                nodes = (await client.get("/api/v1/nodes")).json()["nodes"]
            assert [(n["node_id"], n["reasoners"]) for n in nodes] == [("late", [{"id": "ping"}])]
    finally:
        await app.stop()
