"""The Store contract for records, on both backends: set/get/delete/list, the scope
chain, versions, compare-and-set, incr, clear, TTL, batch units."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from agentfield_asgi.codec import dumps, now_us
from agentfield_asgi.errors import AgentFieldError, VersionConflict
from agentfield_asgi.patterns import matches
from agentfield_asgi.store import Store
from agentfield_asgi.store.base import (
    SCOPES,
    ClearOp,
    DeleteOp,
    IncrOp,
    SetOp,
    resolution_chain,
)

G = ("global", "global")


def op(scope: tuple[str, str], key: str, value: Any, **kw: Any) -> SetOp:
    return SetOp(scope[0], scope[1], key, dumps(value), **kw)


async def put(store: Store, scope: tuple[str, str], key: str, value: Any, **kw: Any) -> Any:
    return await store.set(op(scope, key, value, **kw))


async def test_set_get_delete_round_trip(store: Store) -> None:
    record = await put(store, G, "k", {"a": [1, 2, {"b": None}], "z": "ü"}, metadata={"m": 1})
    assert (record.scope, record.scope_id, record.key, record.version) == (
        "global",
        "global",
        "k",
        1,
    )
    got = await store.get("k", [G])
    assert got is not None
    # JSONB may normalize spacing and key order: compare parsed values.
    assert got.data == {"a": [1, 2, {"b": None}], "z": "ü"}
    assert got.metadata == {"m": 1}
    assert got.created_us == record.created_us and got.updated_us == record.updated_us
    deleted = await store.delete(DeleteOp("global", "global", "k"))
    assert deleted is not None and deleted.data == {"a": [1, 2, {"b": None}], "z": "ü"}
    assert await store.get("k", [G]) is None
    assert await store.delete(DeleteOp("global", "global", "k")) is None


async def test_stored_null_is_a_hit(store: Store) -> None:
    await put(store, G, "nothing", None)
    got = await store.get("nothing", [G])
    assert got is not None and got.data is None and got.data_json == b"null"
    assert [r.key for r in await store.list("global", "global")] == ["nothing"]
    assert "nothing" in await store.get_many(["nothing"], [G])


IDS = {"workflow": "wf-1", "session": "s-1", "actor": "a-1", "global": "global"}


async def test_hierarchical_get_every_combination(store: Store) -> None:
    """Key ``k<mask>`` is stored in the scopes of ``mask``; every combination of present
    headers must find the first holder in workflow, session, actor, global order."""
    for mask in range(16):
        for i, scope in enumerate(SCOPES):
            if mask & (1 << i):
                await put(store, (scope, IDS[scope]), f"k{mask}", scope)
    keys = [f"k{mask}" for mask in range(16)]
    for present in itertools.product([False, True], repeat=3):
        ids = [IDS[s] if p else None for s, p in zip(SCOPES[:3], present, strict=True)]
        chain = resolution_chain(*ids)
        many = await store.get_many(keys, chain)
        for mask in range(16):
            holders = [s for i, s in enumerate(SCOPES) if mask & (1 << i)]
            expected = next((s for s, _ in chain if s in holders), None)
            got = await store.get(f"k{mask}", chain)
            assert (got.data if got else None) == expected, (present, holders)
            assert (many[f"k{mask}"].data if f"k{mask}" in many else None) == expected


async def test_scope_isolation(store: Store) -> None:
    await put(store, ("session", "A"), "cart", ["a"])
    await put(store, ("session", "B"), "other", 1)
    assert await store.get("cart", [("session", "B"), G]) is None
    assert (await store.get("cart", [("session", "A"), G])).data == ["a"]  # type: ignore[union-attr]
    assert [r.key for r in await store.list("session", "B")] == ["other"]
    assert await store.get("cart", [("actor", "A"), ("workflow", "A"), G]) is None
    await store.delete(DeleteOp("session", "B", "cart"))
    assert await store.get("cart", [("session", "A")]) is not None


async def test_versions_increase_and_created_at_is_kept(store: Store) -> None:
    first = await put(store, G, "v", 1)
    second = await put(store, G, "v", 2)
    third = await put(store, G, "v", 3)
    assert [first.version, second.version, third.version] == [1, 2, 3]
    assert third.created_us == first.created_us and third.updated_us >= first.updated_us
    assert (await store.get("v", [G])).version == 3  # type: ignore[union-attr]


async def test_if_version(store: Store) -> None:
    assert (await put(store, G, "cas", "a", if_version=0)).version == 1
    with pytest.raises(VersionConflict) as info:
        await put(store, G, "cas", "b", if_version=0)
    assert info.value.status == 412 and info.value.details["current_version"] == 1
    with pytest.raises(VersionConflict):
        await put(store, G, "cas", "b", if_version=7)
    assert (await put(store, G, "cas", "c", if_version=1)).version == 2
    with pytest.raises(VersionConflict):
        await store.delete(DeleteOp("global", "global", "cas", if_version=1))
    assert (await store.get("cas", [G])).data == "c"  # type: ignore[union-attr]
    assert await store.delete(DeleteOp("global", "global", "cas", if_version=2)) is not None


async def test_failing_unit_rolls_back_alone(store: Store) -> None:
    await put(store, G, "guard", "v1")
    before = await store.last_event_id()
    units = [[op(G, f"ok{i}", i)] for i in range(20)]
    bad = [op(G, "bad-first", 1), op(G, "guard", "v2", if_version=5)]
    units.insert(10, bad)
    results = await asyncio.gather(*(store.write(u) for u in units), return_exceptions=True)
    assert isinstance(results[10], VersionConflict)
    assert all(not isinstance(r, BaseException) for i, r in enumerate(results) if i != 10)
    assert await store.get("bad-first", [G]) is None
    assert (await store.get("guard", [G])).data == "v1"  # type: ignore[union-attr]
    assert len(await store.get_many([f"ok{i}" for i in range(20)], [G])) == 20
    events = await store.events_after(before, 100)
    assert sorted(e.key for e in events) == sorted(f"ok{i}" for i in range(20))


async def test_multi_op_unit_is_atomic_and_sees_its_own_writes(store: Store) -> None:
    results = await store.write(
        [op(G, "x", 1), IncrOp("global", "global", "x", 2), op(G, "y", "yes", if_version=0)]
    )
    assert [r.version for r in results] == [1, 2, 1]
    assert (await store.get("x", [G])).data == 3  # type: ignore[union-attr]
    assert await store.write([]) == []


async def test_incr(store: Store) -> None:
    (first,) = await store.write([IncrOp("global", "global", "n", 5)])
    assert first.data == 5
    (second,) = await store.write([IncrOp("global", "global", "n", 2.5)])
    assert second.data == 7.5 and second.version == 2
    await put(store, G, "text", "abc")
    await put(store, G, "flag", True)
    for key in ("text", "flag"):
        with pytest.raises(AgentFieldError) as info:
            await store.write([IncrOp("global", "global", key, 1)])
        assert info.value.status == 400
    assert (await store.get("text", [G])).data == "abc"  # type: ignore[union-attr]


async def test_concurrent_incr_loses_nothing(store: Store) -> None:
    await asyncio.gather(*(store.write([IncrOp("actor", "a", "hits", 1)]) for _ in range(100)))
    assert (await store.get("hits", [("actor", "a")])).data == 100  # type: ignore[union-attr]


async def test_clear_one_delete_event_per_key(store: Store) -> None:
    for i in range(5):
        await put(store, ("workflow", "wf-c"), f"k{i}", i)
    await put(store, ("workflow", "wf-c"), "gone", 0, ttl_seconds=0.01)
    await put(store, ("workflow", "wf-other"), "keep", 1)
    await asyncio.sleep(0.1)  # let "gone" expire: clearing it reports its expiry
    before = await store.last_event_id()
    (count,) = await store.write([ClearOp("workflow", "wf-c", {"agent_id": "x"})])
    assert count == 5  # live keys removed
    events = await store.events_after(before, 100)
    assert [(e.key, e.action, e.previous_data) for e in events] == [("gone", "delete", 0)] + [
        (f"k{i}", "delete", i) for i in range(5)
    ]
    assert events[0].metadata == {"agent_id": "x", "expired": True, "reason": "ttl"}
    assert all(e.metadata == {"agent_id": "x"} for e in events[1:])
    assert await store.list("workflow", "wf-c") == []
    assert await store.expired_keys(now_us(), 10) == []  # the expired row went too
    assert [r.key for r in await store.list("workflow", "wf-other")] == ["keep"]
    (again,) = await store.write([ClearOp("workflow", "wf-c")])
    assert again == 0


async def test_ttl(store: Store) -> None:
    long = await put(store, G, "long", 1, ttl_seconds=3600)
    assert long.expires_us is not None and long.expires_us > now_us()
    await put(store, G, "short", 2, ttl_seconds=0.05)
    await asyncio.sleep(0.3)  # waiting past the TTL, not measuring speed
    assert await store.get("short", [G]) is None
    assert [r.key for r in await store.list("global", "global")] == ["long"]
    assert "short" not in await store.get_many(["short", "long"], [G])
    assert await store.expired_keys(now_us(), 10) == [("global", "global", "short")]
    # Whoever removes an expired row reports its expiry: here the purger's delete...
    assert await store.delete(DeleteOp("global", "global", "short", expired_only=True)) is not None
    events = await store.events_after(0, 100)
    assert (events[-1].key, events[-1].action, events[-1].metadata.get("expired")) == (
        "short",
        "delete",
        True,
    )
    assert await store.expired_keys(now_us(), 10) == []
    # ...and here a plain delete that reaches it before the purger (no event is lost).
    await put(store, G, "brief", 3, ttl_seconds=0.05)
    await asyncio.sleep(0.3)
    assert await store.delete(DeleteOp("global", "global", "brief")) is not None
    last = (await store.events_after(0, 1000))[-1]
    assert (last.key, last.action, last.metadata.get("expired")) == ("brief", "delete", True)
    # Setting an expired key starts it afresh: a live previous is absent.
    await put(store, G, "again", 1, ttl_seconds=0.05)
    await asyncio.sleep(0.3)
    (again,) = await store.write([op(G, "again", 2, if_version=0)])
    assert again.data == 2
    assert (await store.get("long", [G])).expires_us == long.expires_us  # type: ignore[union-attr]


async def test_get_many(store: Store) -> None:
    await put(store, G, "a", "ga")
    await put(store, ("session", "s"), "a", "sa")
    await put(store, G, "b", "gb")
    got = await store.get_many(["a", "b", "missing"], [("session", "s"), G])
    assert {k: r.data for k, r in got.items()} == {"a": "sa", "b": "gb"}
    assert await store.get_many([], [G]) == {}


WEIRD_KEYS = [
    "plain",
    "ünïcödé-ключ-鍵-🔑",
    "quote'; DROP TABLE memory; --",
    'double"quote',
    "percent%_under",
    "back\\slash",
    "star*",
    "what?",
    "[bracket",
    "a]b",
    "a*b?c[d]",
    "new\nline",
    "trail\n",
    "tab\tkey",
    "space key",
    "$1 dollar",
    "?",
]


async def test_keys_round_trip_literally(store: Store) -> None:
    for i, key in enumerate(WEIRD_KEYS):
        await put(store, ("actor", "x"), key, i)
    for i, key in enumerate(WEIRD_KEYS):
        got = await store.get(key, [("actor", "x")])
        assert got is not None and got.key == key and got.data == i
    listed = [r.key for r in await store.list("actor", "x")]
    assert listed == sorted(WEIRD_KEYS)  # code point order = UTF-8 byte order, on both
    assert await store.get("star", [("actor", "x")]) is None  # no glob on plain reads
    assert await store.get("what", [("actor", "x")]) is None
    assert await store.delete(DeleteOp("actor", "x", "a*b?c[d]")) is not None
    assert await store.get("a*b?c[d]", [("actor", "x")]) is None
    assert await store.get("star*", [("actor", "x")]) is not None


async def test_list_pagination_prefix_and_pattern(store: Store) -> None:
    scope = ("session", "page")
    keys = sorted(
        [f"user:{i:03d}" for i in range(25)] + ["order:1", "order:2", "zeta", *WEIRD_KEYS]
    )
    for key in keys:
        await put(store, scope, key, key)
    await put(store, ("session", "elsewhere"), "user:999", 0)
    seen: list[str] = []
    after: str | None = None
    while True:
        page = await store.list(*scope, limit=7, after_key=after)
        seen += [r.key for r in page]
        if len(page) < 7:
            break
        after = page[-1].key
    assert seen == keys
    prefixed = [r.key for r in await store.list(*scope, prefix="user:0")]
    assert prefixed == [k for k in keys if k.startswith("user:0")]
    first = await store.list(*scope, prefix="user:", limit=3)
    rest = await store.list(*scope, prefix="user:", after_key=first[-1].key)
    assert [r.key for r in first + rest] == [f"user:{i:03d}" for i in range(25)]
    for pattern in [
        "user:0?5",
        "order:*",
        "*[*]*",
        "*\\*",
        "[a-o]*",
        "[!u]*",
        "*?",
        "a*b?c[[]d]",
        "*e",
    ]:
        listed = [r.key for r in await store.list(*scope, pattern=pattern)]
        assert listed == [k for k in keys if matches([pattern], k)], pattern
    # A pattern matches whole keys only: not "trail\n" (Python's "$" would allow that).
    assert [r.key for r in await store.list(*scope, pattern="trail")] == []
    assert [r.key for r in await store.list(*scope, pattern="trail?")] == ["trail\n"]


async def test_scopes_summary(store: Store) -> None:
    await put(store, ("session", "s1"), "a", 1)
    await put(store, ("session", "s1"), "b", 1)
    await put(store, ("workflow", "w1"), "a", 1)
    summary = [(s.scope, s.scope_id, s.keys) for s in await store.scopes()]
    assert summary == [("workflow", "w1", 1), ("session", "s1", 2)]
    assert [s.scope_id for s in await store.scopes("session")] == ["s1"]


async def test_two_hundred_concurrent_writers(store: Store) -> None:
    async def writer(i: int) -> None:
        await store.write(
            [op(("actor", f"a{i % 7}"), f"k{i}", i), IncrOp("global", "global", "total", 1)]
        )

    results = await asyncio.gather(*(writer(i) for i in range(200)), return_exceptions=True)
    assert [r for r in results if isinstance(r, BaseException)] == []
    assert (await store.get("total", [G])).data == 200  # type: ignore[union-attr]
    stored = sum([len(await store.list("actor", f"a{j}")) for j in range(7)])
    assert stored == 200
    assert len(await store.events_after(0, 1000)) == 400


async def test_control_plane_rows(store: Store) -> None:
    await store.put_node("node-b", {"node_id": "node-b", "url": "http://b"})
    await store.put_node("node-a", {"node_id": "node-a", "url": "http://a"})
    await store.put_node("node-b", {"node_id": "node-b", "url": "http://b2"})
    assert await store.get_nodes() == [
        {"node_id": "node-a", "url": "http://a"},
        {"node_id": "node-b", "url": "http://b2"},
    ]
    assert await store.get_workflow("wf-x") is None
    await store.put_workflow({"workflow_id": "wf-x", "status": "running"})
    await store.put_execution({"execution_id": "e1", "workflow_id": "wf-x", "status": "running"})
    await store.put_execution({"execution_id": "e2", "workflow_id": "wf-x", "status": "running"})
    await store.put_execution({"execution_id": "e1", "workflow_id": "wf-x", "status": "done"})
    await store.put_execution({"execution_id": "e3", "workflow_id": "wf-y", "status": "running"})
    await store.put_workflow({"workflow_id": "wf-x", "status": "completed"})
    workflow = await store.get_workflow("wf-x")
    assert workflow is not None and workflow["status"] == "completed"
    assert {e["execution_id"]: e["status"] for e in workflow["executions"]} == {
        "e1": "done",
        "e2": "running",
    }
