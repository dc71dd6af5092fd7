"""Vector writes that share a group commit, on every backend (PostgreSQL decides a
group's vector ops in memory and writes them in bulk): the same answers as one by one."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from agentfield_asgi.errors import AgentFieldError, VectorsUnavailable
from agentfield_asgi.settings import Settings
from agentfield_asgi.store import Store, open_store
from agentfield_asgi.store.base import ClearOp, SetOp, VectorDeleteOp, VectorSetOp


@pytest.fixture
async def store(database_url: str) -> Any:
    """An open store on SQLite, PostgreSQL (exact) and PostgreSQL with pgvector."""
    s = open_store(Settings(database_url=database_url))
    await s.open()
    yield s
    await s.close()


def vset(scope_id: str, key: str, values: list[float], **meta: Any) -> VectorSetOp:
    return VectorSetOp("session", scope_id, key, np.array(values, np.float32), meta)


async def outcomes(store: Store, units: list[list[Any]]) -> list[Any]:
    """Submit ``units`` at once (so they share groups), in order."""
    return await asyncio.gather(*(store.write(u) for u in units), return_exceptions=True)


async def test_a_group_agrees_on_each_scopes_dimension(store: Store) -> None:
    results = await outcomes(
        store,
        [
            [vset("s1", "a", [1, 0, 0])],
            [vset("s1", "b", [1, 0, 0, 0])],  # another key holds dimension 3
            [vset("s1", "c", [0, 1, 0])],
            [vset("s2", "only", [1, 0])],
            [vset("s2", "only", [1, 0, 0, 0])],  # the scope's only key: may change dimension
            [vset("s3", "x", [1, 0]), vset("s3", "y", [1, 0, 0])],  # fails whole
            [vset("s3", "z", [0, 1, 0])],
        ],
    )
    errors = [isinstance(r, AgentFieldError) for r in results]
    assert errors == [False, True, False, False, False, True, False]
    assert results[1].code == "dimension_mismatch"
    hits = await store.vector_search(
        "session", "s1", np.array([1, 0, 0], np.float32), top_k=10, filters=None, metric="cosine"
    )
    assert sorted(h.key for h in hits) == ["a", "c"]
    only = await store.vector_search(
        "session", "s2", np.array([1, 0, 0, 0], np.float32), top_k=10, filters=None, metric="cosine"
    )
    assert [h.key for h in only] == ["only"]
    s3 = await store.vector_search(
        "session", "s3", np.array([0, 1, 0], np.float32), top_k=10, filters=None, metric="cosine"
    )
    assert [h.key for h in s3] == ["z"]  # x (dimension 2) was rolled back with y


async def test_group_events_and_results_match_what_was_written(store: Store) -> None:
    await store.write([vset("e1", "k", [1, 0], n=1)])
    before = await store.last_event_id()
    results = await outcomes(
        store,
        [
            [vset("e1", "k", [0, 1], n=2)],
            [VectorDeleteOp("session", "e2", "missing")],
            [vset("e3", "new", [1, 1], n=3), SetOp("session", "e3", "kv", b"1")],
            [VectorDeleteOp("session", "e1", "gone-before")],
        ],
    )
    assert results[1] == [False] and results[3] == [False]
    first_set = results[0][0]
    assert (first_set.key, first_set.metadata) == ("k", {"n": 2})
    events = await store.events_after(before, 100)
    summary = [(e.scope_id, e.key, e.action, e.metadata.get("kind")) for e in events]
    assert summary == [
        ("e1", "k", "set", "vector"),
        ("e3", "new", "set", "vector"),
        ("e3", "kv", "set", None),
    ]
    assert events[0].previous_data == {"metadata": {"n": 1}, "dimension": 2}
    assert events[0].data == {"metadata": {"n": 2}, "dimension": 2}


async def test_clear_and_sets_in_one_group_keep_their_order(store: Store) -> None:
    await store.write([vset("c1", "old", [1, 0])])
    results = await outcomes(
        store,
        [
            [vset("c1", "before-clear", [1, 0])],
            [ClearOp("session", "c1")],
            [vset("c1", "after-clear", [1, 0, 0])],  # emptied: any dimension
        ],
    )
    assert not any(isinstance(r, BaseException) for r in results), results
    hits = await store.vector_search(
        "session", "c1", np.array([1, 0, 0], np.float32), top_k=10, filters=None, metric="cosine"
    )
    assert [h.key for h in hits] == ["after-clear"]


@pytest.mark.parametrize("count", [40])
async def test_many_concurrent_vector_writers(store: Store, count: int) -> None:
    results = await outcomes(
        store, [[vset("many", f"v{i}", [float(i), 1.0])] for i in range(count)]
    )
    assert not any(isinstance(r, BaseException) for r in results)
    hits = await store.vector_search(
        "session", "many", np.array([1, 1], np.float32), top_k=1000, filters=None, metric="cosine"
    )
    assert len(hits) == count


async def test_search_without_a_vector_part_is_501(database_url: str) -> None:
    unopened = open_store(Settings(database_url=database_url))
    with pytest.raises(VectorsUnavailable) as raised:
        await unopened.vector_search(
            "session", "s", np.array([1.0], np.float32), top_k=1, filters=None, metric="cosine"
        )
    assert (raised.value.status, raised.value.code) == (501, "not_implemented")
