"""TTL (LangGraph's ``TTLConfig``, minutes) on our TTL, with the purger off: an expired
item is never returned, swept or not. And LangGraph writes are ordinary change events."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

from agentfield_asgi import MemoryClient
from agentfield_asgi.codec import now_us
from agentfield_asgi.langgraph import AgentFieldStore
from agentfield_asgi.testing import ServerProcess
from agentfield_asgi.testing.waits import WAIT_SECONDS, wait_until


async def _expires_at(store: AgentFieldStore, memory_key: str) -> datetime:
    record = (await store._calls.get_many([memory_key]))[memory_key]
    return datetime.fromisoformat(record["expires_at"])


async def test_expired_items_are_never_returned_without_a_sweep(make_store: Any) -> None:
    store = make_store()
    await store.aput(("t",), "short", {"v": 1}, ttl=0.02)  # 1.2 s
    await store.aput(("t",), "long", {"v": 2}, ttl=60)
    await store.aput(("u",), "short", {"v": 3}, ttl=0.02)
    deadline = max(await _expires_at(store, "t/short"), await _expires_at(store, "u/short"))
    await wait_until(lambda: time.time() > deadline.timestamp() + 0.05, "the TTL passes")
    assert await store.aget(("t",), "short") is None
    assert [i.key for i in await store.asearch(("t",))] == ["long"]
    assert await store.alist_namespaces() == [("t",)]
    if make_store.service is not None:  # the rows are still there: no sweep ran
        expired = await make_store.service.store.expired_keys(now_us(), 10)
        assert sorted(k for _, _, k in expired) == ["t/short", "u/short"]


async def test_ttl_refresh_on_read_and_without(make_store: Any) -> None:
    store = make_store(ttl={"default_ttl": 5, "refresh_on_read": True})
    await store.aput(("r",), "a", {"v": 1})  # default_ttl
    await store.aput(("r",), "b", {"v": 2}, ttl=None)  # no expiry
    first = await _expires_at(store, "r/a")
    assert 299 <= (first - datetime.now(first.tzinfo)).total_seconds() <= 300
    assert "expires_at" not in (await store._calls.get_many(["r/b"]))["r/b"]
    await asyncio.sleep(0.01)
    assert (await store.aget(("r",), "a", refresh_ttl=False)).value == {"v": 1}  # type: ignore[union-attr]
    assert await _expires_at(store, "r/a") == first
    await store.aget(("r",), "a")  # refresh_on_read
    second = await _expires_at(store, "r/a")
    assert second > first
    await asyncio.sleep(0.01)
    assert [i.key for i in await store.asearch(("r",))] == ["a", "b"]
    assert await _expires_at(store, "r/a") > second
    item = await store.aget(("r",), "a")
    assert item is not None and item.value == {"v": 1}


async def test_refresh_on_read_off_by_config(make_store: Any) -> None:
    store = make_store(ttl={"default_ttl": 5, "refresh_on_read": False})
    await store.aput(("r",), "a", {"v": 1})
    first = await _expires_at(store, "r/a")
    await asyncio.sleep(0.01)
    await store.aget(("r",), "a")
    await store.asearch(("r",))
    assert await _expires_at(store, "r/a") == first
    await store.aget(("r",), "a", refresh_ttl=True)  # the op's choice wins
    assert await _expires_at(store, "r/a") > first


async def test_langgraph_writes_are_change_events(lg_server: ServerProcess) -> None:
    memory = MemoryClient(lg_server.url)
    seen: list[Any] = []
    memory.global_scope.on_change("users/*")(seen.append)
    store = AgentFieldStore(lg_server.url)
    try:
        async with memory.events:
            await memory.events.wait_connected(WAIT_SECONDS)
            await store.abatch([])
            await store.aput(("users", "alice"), "prefs", {"tone": "brief"})
            await store.adelete(("users", "alice"), "prefs")
            await wait_until(lambda: len(seen) >= 2, "LangGraph writes seen over SSE")
        # Our own clients read what LangGraph wrote, at the documented key.
        await store.aput(("users", "bob"), "prefs", {"tone": "long"})
        assert await memory.global_scope.get("users/bob/prefs") == {"tone": "long"}
    finally:
        await store.aclose()
        await memory.aclose()
    assert [(e.key, e.action, e.scope) for e in seen] == [
        ("users/alice/prefs", "set", "global"),
        ("users/alice/prefs", "delete", "global"),
    ]
    assert seen[0].data == {"tone": "brief"}
    assert seen[1].previous_data == {"tone": "brief"}
    assert seen[0].metadata["agent_id"] == "langgraph"
