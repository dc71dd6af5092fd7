"""The SDK's extensions, over HTTP to a live server and in process, on both backends:
set(if_version=, ttl_seconds=), incr, update() retrying on 412, set_many, get_many,
clear() on scoped clients, paginated list_keys."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from agentfield_asgi.client.memory import MemoryClient
from agentfield_asgi.context import ExecutionContext, reset_current_context, set_current_context
from agentfield_asgi.errors import MemoryAccessError
from agentfield_asgi.server.app import MemoryService, create_memory_app
from agentfield_asgi.testing import ServerProcess

from .helpers import every_event


@pytest.fixture(params=["http", "in-process"])
async def memory(request: pytest.FixtureRequest, database_url: str) -> AsyncIterator[MemoryClient]:
    if request.param == "http":
        server: ServerProcess = request.getfixturevalue("live_server")
        client = MemoryClient(server.url, timeout=60)
        yield client
        await client.aclose()
        return
    service = create_memory_app(database_url)
    await service.start()
    client = MemoryClient(service=service, timeout=60)
    yield client
    await client.aclose()
    await service.stop()


@pytest.fixture
def in_session() -> Iterator[ExecutionContext]:
    ctx = ExecutionContext(workflow_id="wf-sdk", session_id="sess-sdk")
    token = set_current_context(ctx)
    yield ctx
    reset_current_context(token)


async def test_set_if_version_and_ttl(memory: MemoryClient) -> None:
    first = await memory.set("k", "a", if_version=0)
    assert first["version"] == 1
    with pytest.raises(MemoryAccessError) as conflict:
        await memory.set("k", "b", if_version=0)
    assert conflict.value.status == 412
    assert conflict.value.details["current"]["data"] == "a"
    assert (await memory.set("k", "b", if_version=1))["version"] == 2
    record = await memory.set("temp", 1, ttl_seconds=0.3)
    assert "expires_at" in record
    await asyncio.sleep(0.5)
    assert not await memory.exists("temp")
    assert await memory.get("k") == "b"


async def test_incr(memory: MemoryClient) -> None:
    assert await memory.incr("n") == 1
    assert await memory.incr("n", by=10) == 11
    assert await memory.global_scope.incr("n", by=-1) == 10
    with pytest.raises(MemoryAccessError) as bad:
        await memory.set("s", "text")
        await memory.incr("s")
    assert bad.value.status == 400 and bad.value.code == "not_a_number"


async def test_update_retries_on_conflict(memory: MemoryClient) -> None:
    await memory.set("doc", {"n": 0})
    calls: list[Any] = []

    async def bump(current: dict[str, int]) -> dict[str, int]:
        calls.append(current)
        if len(calls) == 1:  # somebody else writes between our read and our write
            await memory.set("doc", {"n": 100})
        return {"n": current["n"] + 1}

    assert await memory.update("doc", bump) == {"n": 101}
    assert calls == [{"n": 0}, {"n": 100}]  # run again on the other writer's value
    assert await memory.get("doc") == {"n": 101}

    async def always_loses(current: Any) -> int:
        await memory.set("doc", {"n": -1})
        return 0

    with pytest.raises(MemoryAccessError) as gave_up:
        await memory.update("doc", always_loses, retries=2)
    assert gave_up.value.status == 412
    assert await memory.update("fresh", lambda current: (current or 0) + 1) == 1


async def test_concurrent_updates_lose_nothing(memory: MemoryClient) -> None:
    async def append(worker: int) -> None:
        for n in range(5):
            await memory.update(
                "log", lambda items, w=worker, i=n: [*(items or []), f"{w}:{i}"], retries=100
            )

    await asyncio.gather(*(append(w) for w in range(8)))
    assert sorted(await memory.get("log")) == sorted(f"{w}:{i}" for w in range(8) for i in range(5))


async def test_update_unscoped_acts_on_the_write_target(
    memory: MemoryClient, in_session: ExecutionContext
) -> None:
    await memory.global_scope.set("shared", 5)  # visible to an unscoped read...
    assert (
        await memory.update("shared", lambda v: (v or 0) + 1) == 1
    )  # ...but writes go to the workflow
    assert await memory.workflow().get("shared") == 1
    assert await memory.global_scope.get("shared") == 5


async def test_set_many_get_many_clear(memory: MemoryClient, in_session: ExecutionContext) -> None:
    session = memory.session()
    results = await session.set_many({"a": 1, "b": None, "c": [1, 2]})
    assert [r["key"] for r in results] == ["a", "b", "c"]
    assert all(r["scope"] == "session" for r in results)
    await memory.global_scope.set("g", "global")
    assert await memory.get_many(["a", "b", "c", "g", "zz"]) == {
        "a": 1,
        "b": None,
        "c": [1, 2],
        "g": "global",
    }
    assert await session.get_many(["a", "g"]) == {"a": 1}
    with pytest.raises(MemoryAccessError):
        await session.set_many({"ok": 1, "": 2})  # one bad key: nothing written
    assert not await session.exists("ok")
    assert await session.clear() == 3
    assert await session.list_keys() == []
    assert await memory.global_scope.get("g") == "global"


async def test_list_keys_walks_pages(memory: MemoryClient) -> None:
    keys = {f"item:{i:03d}": i for i in range(23)} | {"other": 0}
    await memory.global_scope.set_many(keys)
    assert await memory.list_keys("global", page_size=5, prefix="item:") == sorted(
        k for k in keys if k != "other"
    )
    page, cursor = await memory.global_scope.list_page(limit=10)
    assert len(page) == 10 and cursor is not None
    rest, end = await memory.global_scope.list_page(limit=100, cursor=cursor)
    assert end is None and len(page) + len(rest) == 24
    assert await memory.global_scope.list_keys(pattern="oth*") == ["other"]


async def test_clear_emits_a_delete_event_per_key(service: MemoryService) -> None:
    memory = MemoryClient(service=service)
    await memory.session("s1").set_many({"x": 1, "y": 2})
    assert await memory.session("s1").clear() == 2
    deletes = [e for e in await every_event(service.store) if e.action == "delete"]
    assert sorted(e.key for e in deletes) == ["x", "y"]
