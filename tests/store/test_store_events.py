"""The change log on both backends: events written with their change, the local watch
feed, events_after / history per PROTOCOL.md, compaction, durability across reopen."""

from __future__ import annotations

import asyncio
from typing import Any

from agentfield_asgi.codec import dumps, now_us
from agentfield_asgi.settings import Settings
from agentfield_asgi.store import Store, open_store
from agentfield_asgi.store.base import DeleteOp, Event, EventFilter, SetOp


async def put(store: Store, scope: str, scope_id: str, key: str, value: Any, **kw: Any) -> None:
    await store.set(SetOp(scope, scope_id, key, dumps(value), **kw))


def newest_seen(seen: list[Event]) -> int:
    return seen[-1].id if seen else 0


async def test_events_carry_data_previous_and_metadata(store: Store) -> None:
    meta = {"agent_id": "agent-1", "workflow_id": "wf-1"}
    await put(store, "session", "s", "k", {"v": 1}, event_metadata=meta)
    await put(store, "session", "s", "k", {"v": 2})
    await store.delete(DeleteOp("session", "s", "k", {"agent_id": "agent-2"}))
    await store.delete(DeleteOp("session", "s", "k"))  # absent: no event
    events = await store.events_after(0, 100)
    assert [(e.action, e.data, e.previous_data) for e in events] == [
        ("set", {"v": 1}, None),
        ("set", {"v": 2}, {"v": 1}),
        ("delete", None, {"v": 2}),
    ]
    assert [e.metadata for e in events] == [meta, {}, {"agent_id": "agent-2"}]
    assert all((e.scope, e.scope_id, e.key) == ("session", "s", "k") for e in events)
    ids = [e.id for e in events]
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert await store.last_event_id() == ids[-1]
    body = events[0].to_dict()
    assert body["id"] == str(ids[0]) and body["timestamp"].endswith("Z")


async def test_watchers_get_every_commit_once_in_order(store: Store, eventually) -> None:
    seen: list[Event] = []
    unwatch = store.watch(seen.extend)
    await asyncio.gather(*(put(store, "actor", "a", f"k{i}", i) for i in range(50)))
    newest = await store.last_event_id()
    await eventually(lambda: newest_seen(seen) >= newest)
    assert [e.id for e in seen] == [e.id for e in await store.events_after(0, 1000)]
    unwatch()
    await put(store, "actor", "a", "after", 1)
    await asyncio.sleep(0.3)
    assert seen[-1].id == newest


async def test_events_after_filters(store: Store) -> None:
    await put(store, "session", "s1", "user.name", 1)
    await put(store, "session", "s2", "user.name", 2)
    await put(store, "actor", "s1", "user.age", 3)
    await put(store, "session", "s1", "cart", 4)
    pick = await store.events_after(0, 10, EventFilter(patterns=("user.*",), scope="session"))
    assert [e.data for e in pick] == [1, 2]
    pick = await store.events_after(0, 10, EventFilter(scope="session", scope_id="s1"))
    assert [e.data for e in pick] == [1, 4]
    pick = await store.events_after(0, 10, EventFilter(patterns=("cart", "*.age")))
    assert [e.data for e in pick] == [3, 4]
    first = (await store.events_after(0, 1))[0]
    assert [e.data for e in await store.events_after(first.id, 2)] == [2, 3]


async def test_history_semantics(store: Store) -> None:
    for i in range(10):
        await put(store, "global", "global", f"h{i}", i)
        await put(store, "session", "x", f"other{i}", i)
    flt = EventFilter(patterns=("h*",))
    newest = await store.history(flt, since_us=None, since_id=None, limit=3)
    assert [e.data for e in newest] == [7, 8, 9]  # the newest three, oldest first
    everything = await store.history(flt, since_us=None, since_id=None, limit=100)
    assert [e.data for e in everything] == list(range(10))
    paged = await store.history(flt, since_us=None, since_id=everything[2].id, limit=3)
    assert [e.data for e in paged] == [3, 4, 5]  # the first three after since_id
    since = everything[6].ts_us
    narrowed = await store.history(flt, since_us=since, since_id=None, limit=100)
    values = [e.data for e in narrowed]
    assert values[0] <= 6 and values[-1] == 9
    assert all(e.ts_us >= since for e in narrowed)
    scoped = await store.history(
        EventFilter(scope="session", scope_id="x"), since_us=None, since_id=None, limit=2
    )
    assert [e.key for e in scoped] == ["other8", "other9"]
    later = await store.history(flt, since_us=now_us() + 10_000_000, since_id=None, limit=5)
    assert later == []


async def test_compaction(store: Store) -> None:
    for i in range(10):
        await put(store, "global", "global", f"c{i}", i)
    ids = [e.id for e in await store.events_after(0, 100)]
    assert await store.compacted_through() == 0
    assert await store.compact(max_age_seconds=3600, max_events=None) == 0
    assert await store.compact(max_age_seconds=None, max_events=4) == 6
    assert await store.compacted_through() == ids[5]
    assert [e.id for e in await store.events_after(0, 100)] == ids[6:]
    assert await store.compact(max_age_seconds=None, max_events=4) == 0
    assert await store.compacted_through() == ids[5]
    assert await store.compact(max_age_seconds=0, max_events=None) == 4
    assert await store.compacted_through() == ids[-1]
    assert await store.last_event_id() == ids[-1]  # ids keep rising after the log empties
    await put(store, "global", "global", "next", 1)
    assert await store.last_event_id() > ids[-1]
    assert (await store.get("c0", [("global", "global")])) is not None  # records stay


async def test_data_survives_reopen(database_url: str) -> None:
    store = open_store(Settings(database_url=database_url))
    await store.open()
    await asyncio.gather(*(put(store, "workflow", "wf", f"k{i}", {"i": i}) for i in range(20)))
    await store.put_node("n", {"node_id": "n"})
    newest = await store.last_event_id()
    await store.close()

    reopened = open_store(Settings(database_url=database_url))
    await reopened.open()
    try:
        records = await reopened.list("workflow", "wf")
        assert sorted(r.data["i"] for r in records) == list(range(20))
        assert await reopened.last_event_id() == newest
        assert await reopened.get_nodes() == [{"node_id": "n"}]
        await put(reopened, "workflow", "wf", "k0", "new")
        assert (await reopened.get("k0", [("workflow", "wf")])).version == 2  # type: ignore[union-attr]
    finally:
        await reopened.close()
