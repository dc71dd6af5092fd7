"""The synchronous API (what ``graph.invoke`` uses) over HTTP and in process, and closing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langgraph.store.base import GetOp, PutOp

from agentfield_asgi.langgraph import AgentFieldStore
from agentfield_asgi.testing import ServerProcess


def _round_trip(store: AgentFieldStore) -> list[Any]:
    store.put(("sync", "ns"), "k", {"v": 1})
    store.batch([PutOp(("sync", "ns"), "k2", {"v": 2}), PutOp(("sync",), "k3", {"v": 3})])
    got = store.get(("sync", "ns"), "k")
    assert got is not None and got.value == {"v": 1}
    store.delete(("sync", "ns"), "k2")
    return [
        sorted(i.key for i in store.search(("sync",))),
        store.list_namespaces(prefix=("sync",)),
    ]


async def test_sync_api_from_a_worker_thread(make_store: Any) -> None:
    store = make_store()
    keys, namespaces = await asyncio.to_thread(_round_trip, store)
    assert keys == ["k", "k3"]
    assert namespaces == [("sync",), ("sync", "ns")]
    # Both APIs see the same data.
    assert (await store.abatch([GetOp(("sync",), "k3")]))[0].value == {"v": 3}


async def test_sync_api_on_the_service_loop_is_refused(make_store: Any) -> None:
    store = make_store()
    if make_store.service is None:  # over HTTP the sync API runs on a loop of its own
        store.put(("on", "loop"), "k", {"v": 1})
        assert (await store.aget(("on", "loop"), "k")).value == {"v": 1}  # type: ignore[union-attr]
        return
    with pytest.raises(RuntimeError, match="async API"):
        store.put(("on", "loop"), "k", {"v": 1})
    assert await store.aget(("on", "loop"), "k") is None


def test_context_manager_closes_and_a_bad_target_is_refused(lg_server: ServerProcess) -> None:
    with AgentFieldStore(lg_server.url) as store:
        store.put(("cm",), "k", {"v": 1})
        assert store._sync_thread is not None and store._sync_thread.is_alive()
        thread = store._sync_thread
    assert not thread.is_alive()
    with pytest.raises(ValueError, match="URL or a service"):
        AgentFieldStore()
    with pytest.raises(ValueError, match="scope_id"):
        AgentFieldStore(lg_server.url, scope="session")
    with pytest.raises(ValueError, match="scope must be"):
        AgentFieldStore(lg_server.url, scope="galaxy")


def test_session_scope_store_is_visible_in_that_session(lg_server: ServerProcess) -> None:
    import httpx

    with AgentFieldStore(lg_server.url, scope="session", scope_id="user-1") as store:
        store.put(("prefs",), "tone", {"v": "brief"})
        assert store.get(("prefs",), "tone").value == {"v": "brief"}  # type: ignore[union-attr]
    reply = httpx.get(
        f"{lg_server.url}/api/v1/memory/list",
        params={"scope": "session"},
        headers={"X-Session-ID": "user-1"},
    )
    assert [(r["key"], r["data"]) for r in reply.json()] == [("prefs/tone", {"v": "brief"})]
    other = httpx.get(
        f"{lg_server.url}/api/v1/memory/list",
        params={"scope": "global"},
    )
    assert other.json() == []
