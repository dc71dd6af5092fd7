"""MemoryClient against a live server (HTTP on loopback) and in process, on both backends."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from agentfield_asgi import ExecutionContext, MemoryAccessError, MemoryClient, create_memory_app
from agentfield_asgi.client import InProcessTransport
from agentfield_asgi.context import reset_current_context, set_current_context


@contextmanager
def context(**ids: str) -> Iterator[ExecutionContext]:
    ctx = ExecutionContext(**ids)
    token = set_current_context(ctx)
    try:
        yield ctx
    finally:
        reset_current_context(token)


async def test_unscoped_set_goes_to_the_workflow_and_get_finds_it(memory: MemoryClient) -> None:
    with context(workflow_id="wf-1", session_id="s-1"):
        record = await memory.set("ticket", {"priority": "high"})
        assert (record["scope"], record["scope_id"]) == ("workflow", "wf-1")
        assert await memory.get("ticket") == {"priority": "high"}
    assert await memory.workflow("wf-1").get("ticket") == {"priority": "high"}
    assert await memory.session("s-1").get("ticket", default="none") == "none"
    with context(workflow_id="wf-2", session_id="s-1"):
        assert await memory.get("ticket") is None


async def test_hierarchy_workflow_session_actor_global(memory: MemoryClient) -> None:
    await memory.global_scope.set("tone", "global")
    await memory.actor("a-1").set("tone", "actor")
    await memory.session("s-1").set("tone", "session")
    await memory.workflow("wf-1").set("tone", "workflow")
    assert await memory.get("tone") == "global"  # no context: only global
    with context(actor_id="a-1"):
        assert await memory.get("tone") == "actor"
    with context(session_id="s-1", actor_id="a-1"):
        assert await memory.get("tone") == "session"
    with context(workflow_id="wf-1", session_id="s-1", actor_id="a-1"):
        assert await memory.get("tone") == "workflow"
    with context(workflow_id="wf-other", actor_id="a-1"):
        assert await memory.get("tone") == "actor"


async def test_scoped_views_take_their_id_from_the_context(memory: MemoryClient) -> None:
    with context(workflow_id="wf-9", session_id="s-9"):
        await memory.session().set("cart", [1, 2])
        await memory.workflow().set("step", 3)
        assert memory.session().scope_id == "s-9"
    assert await memory.session("s-9").get("cart") == [1, 2]
    assert await memory.workflow("wf-9").get("step") == 3
    with pytest.raises(MemoryAccessError) as info:
        await memory.session().get("cart")  # no context, no id
    assert info.value.status == 400
    assert info.value.code == "missing_scope_id"


async def test_exists_is_exact_and_null_is_a_value(memory: MemoryClient) -> None:
    scoped = memory.session("s-null")
    await scoped.set("nothing", None)
    assert await scoped.exists("nothing") is True
    assert await scoped.get("nothing", default="fallback") is None
    assert await scoped.exists("absent") is False
    assert await scoped.get("absent", default="fallback") == "fallback"


async def test_delete_and_list_keys(memory: MemoryClient) -> None:
    scoped = memory.session("s-list")
    for key in ("b", "a", "c"):
        await scoped.set(key, key.upper())
    assert await scoped.list_keys() == ["a", "b", "c"]
    assert await memory.list_keys("session", "s-list") == ["a", "b", "c"]
    await scoped.delete("b")
    await scoped.delete("never-there")
    assert await scoped.list_keys() == ["a", "c"]
    assert await scoped.exists("b") is False
    await memory.global_scope.set("g", 1)
    assert "g" in await memory.global_scope.list_keys()
    with pytest.raises(TypeError):
        await memory.list_keys()


async def test_unscoped_delete_acts_on_the_write_target(memory: MemoryClient) -> None:
    await memory.session("s-d").set("k", "session")
    with context(workflow_id="wf-d", session_id="s-d"):
        await memory.set("k", "workflow")
        await memory.delete("k")  # removes the workflow's copy only
        assert await memory.get("k") == "session"


async def test_errors_carry_status_code_and_message(memory: MemoryClient) -> None:
    with pytest.raises(MemoryAccessError) as info:
        await memory.global_scope.set("", 1)
    assert (info.value.status, info.value.code) == (400, "invalid_key")
    assert "empty" in info.value.message
    with pytest.raises(MemoryAccessError) as info:
        await memory.global_scope.set("big", "x" * (1024 * 1024 + 10))
    assert info.value.status == 413
    assert await memory.global_scope.exists("big") is False
    with pytest.raises(ValueError):
        await memory.set("k", 1, scope="galaxy")
    with pytest.raises(TypeError):
        await memory.session("s").set("k", 1, scope="global")


async def test_default_actor_gives_each_node_its_own_actor_memory(memory: MemoryClient) -> None:
    node_a = MemoryClient(transport=memory.transport, agent_node_id="a", default_actor_id="a")
    node_b = MemoryClient(transport=memory.transport, agent_node_id="b", default_actor_id="b")
    record = await node_a.actor().set("style", "formal")
    assert (record["scope"], record["scope_id"]) == ("actor", "a")
    assert await node_a.get("style") == "formal"
    assert await node_b.get("style") is None
    # An actor id carried by the context wins over the node default.
    with context(actor_id="user-actor"):
        await node_a.actor().set("pref", "dark")
        assert await node_b.get("pref") == "dark"


async def test_concurrent_contexts_stay_apart(memory: MemoryClient) -> None:
    async def run(i: int) -> tuple[int, object]:
        with context(workflow_id=f"wf-c{i}"):
            await memory.set("token", i)
            await asyncio.sleep(0)
            return i, await memory.get("token")

    results = await asyncio.gather(*(run(i) for i in range(30)))
    assert all(i == value for i, value in results)


async def test_values_round_trip_exactly(memory: MemoryClient) -> None:
    values = [0, -1.5, True, "ünïcödé ✓", [1, [2, [3]]], {"a": {"b": None}}, "", []]
    scoped = memory.global_scope
    for i, value in enumerate(values):
        await scoped.set(f"v{i}", value)
    for i, value in enumerate(values):
        got = await scoped.get(f"v{i}")
        assert got == value and type(got) is type(value)


async def test_in_process_transport_reaches_other_routes(database_url: str) -> None:
    service = create_memory_app(database_url)
    transport = InProcessTransport(service)  # not started: the first call starts it lazily
    try:
        reply = await transport.request("GET", "/api/v1/health")
        assert reply.status == 200 and reply.body["status"] == "ok"
        missing = await transport.request("GET", "/api/v1/no-such-route")
        assert missing.status == 404
    finally:
        await transport.aclose()
        await service.stop()


async def test_http_wrong_base_url_raises_instead_of_missing(live_server) -> None:  # type: ignore[no-untyped-def]
    client = MemoryClient(live_server.url + "/wrong-prefix")
    with pytest.raises(MemoryAccessError) as info:
        await client.global_scope.get("anything")
    assert info.value.status == 404


async def test_http_clients_share_one_pooled_connection_pool(live_server) -> None:  # type: ignore[no-untyped-def]
    first = MemoryClient(live_server.url)
    second = MemoryClient(live_server.url + "/", timeout=3.0)
    assert first.transport is second.transport
    await first.global_scope.set("pooled", 1)
    pool = first.transport._http()  # type: ignore[attr-defined]
    await asyncio.gather(*(second.global_scope.get("pooled") for _ in range(40)))
    assert first.transport._http() is pool  # type: ignore[attr-defined]
    assert isinstance(pool, httpx.AsyncClient)
