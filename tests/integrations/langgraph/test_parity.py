"""``AgentFieldStore`` answers as LangGraph's reference ``InMemoryStore`` does.

The same op sequences run against both stores and every result is compared.
Documented differences, normalised here and nowhere else:

* search without a query lists items in namespace-then-key order; ``InMemoryStore``
  in insertion order. Random sequences compare full result sets sorted; the paging
  test inserts in key order, where both orders agree, and compares pages exactly.
* a namespace is listed only while it holds an item; ``InMemoryStore`` keeps listing
  namespaces emptied by deletes (or created by a get). Empty ones are pruned from the
  reference before each batch and left out of its listings.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from langgraph.store.base import (
    GetOp,
    InvalidNamespaceError,
    ListNamespacesOp,
    MatchCondition,
    PutOp,
    SearchOp,
)
from langgraph.store.memory import InMemoryStore

from agentfield_asgi.langgraph import AgentFieldStore

LABELS = ["users", "alice", "bob", "docs", "notes", "x%2F", "a/b", "é"]
KEYS = ["k1", "k2", "k/3", "%25", "über", "a.b"]


def _norm(result: Any) -> Any:
    """Items as comparable tuples (timestamps differ between stores by nature)."""
    if isinstance(result, list):
        if result and isinstance(result[0], tuple):
            return result  # namespaces
        return [_norm(r) for r in result]
    if result is None:
        return None
    return (result.namespace, result.key, result.value)


def _prune(reference: InMemoryStore) -> None:
    for namespace in [n for n, items in reference._data.items() if not items]:
        del reference._data[namespace]


def _live(
    listed: list[tuple[str, ...]], live: set[tuple[str, ...]], depth: int | None
) -> list[tuple[str, ...]]:
    """The listed namespaces that stand for one holding items (a get in the same batch
    makes ``InMemoryStore`` list an empty namespace)."""
    if depth is None:
        return [n for n in listed if n in live]
    return [n for n in listed if any(ns[:depth] == n for ns in live)]


async def _both(ours: AgentFieldStore, reference: InMemoryStore, ops: list[Any]) -> list[Any]:
    _prune(reference)
    live = set(reference._data)
    expected = await reference.abatch(ops)
    got = await ours.abatch(ops)
    assert len(got) == len(expected)
    for op, a, b in zip(ops, got, expected, strict=True):
        if isinstance(op, ListNamespacesOp):
            b = _live(b, live, op.max_depth)
        if isinstance(op, SearchOp):
            a, b = sorted(_norm(a)), sorted(_norm(b))
        else:
            a, b = _norm(a), _norm(b)
        assert a == b, f"{op}: {a} != {b}"
    return got


def _value(rng: random.Random) -> dict[str, Any]:
    return {
        "n": rng.choice([0, 1, 2, 2.5, 3, 10, -4]),
        "tag": rng.choice(["red", "blue", "green"]),
        "nested": {"a": rng.choice([1, 2]), "b": rng.choice(["x", "y"])},
        "items": rng.choice([[1, 2], [2, 1], []]),
    }


def _filter(rng: random.Random) -> dict[str, Any] | None:
    choices: list[dict[str, Any] | None] = [
        None,
        {"tag": rng.choice(["red", "blue"])},
        {"n": {rng.choice(["$gt", "$gte", "$lt", "$lte"]): rng.choice([0, 2, 2.5, 3])}},
        {"n": {"$eq": 2}},
        {"n": {"$ne": 2}, "tag": "red"},
        {"tag": {"$ne": "green"}},
        {"nested": {"a": 1}},
        {"nested": {"a": 2, "b": "y"}},
        {"nested": {"a": {"$gt": 1}}},
        {"items": [1, 2]},
        {"n": {"$gte": 0, "$lt": 3}},
        {"missing": {"$eq": None}},
    ]
    return rng.choice(choices)


def _namespace(rng: random.Random) -> tuple[str, ...]:
    return tuple(rng.choice(LABELS) for _ in range(rng.randint(1, 3)))


def _random_batch(rng: random.Random) -> list[Any]:
    ops: list[Any] = []
    for _ in range(rng.randint(1, 6)):
        kind = rng.random()
        namespace = _namespace(rng)
        if kind < 0.45:
            value = None if rng.random() < 0.2 else _value(rng)
            ops.append(PutOp(namespace, rng.choice(KEYS), value))
        elif kind < 0.65:
            ops.append(GetOp(namespace, rng.choice(KEYS)))
        elif kind < 0.85:
            prefix = namespace[: rng.randint(0, len(namespace))]
            ops.append(SearchOp(prefix, filter=_filter(rng), limit=1000))
        else:
            conditions = []
            if rng.random() < 0.5:
                path = tuple(rng.choice([*LABELS[:4], "*"]) for _ in range(rng.randint(1, 2)))
                conditions.append(MatchCondition(rng.choice(["prefix", "suffix"]), path))
            depth = rng.choice([None, 1, 2])
            ops.append(ListNamespacesOp(tuple(conditions) or None, depth, limit=1000))
    return ops


@pytest.mark.parametrize("seed", [1, 2])
async def test_random_sequences_match_in_memory_store(make_store: Any, seed: int) -> None:
    ours, reference = make_store(), InMemoryStore()
    rng = random.Random(seed)
    for _ in range(40):
        await _both(ours, reference, _random_batch(rng))
    everything = SearchOp((), limit=1000)
    final = await _both(ours, reference, [everything, ListNamespacesOp(limit=1000)])
    assert final[0], "the sequence left items to compare"


async def test_filters_each_operator(make_store: Any) -> None:
    ours, reference = make_store(), InMemoryStore()
    values = [{"n": n, "s": s} for n, s in [(1, "a"), (2, "b"), (2.5, "a"), (3, "c"), (-1, "b")]]
    await _both(ours, reference, [PutOp(("f",), f"k{i}", v) for i, v in enumerate(values)])
    for condition in [
        {"n": 2},
        {"n": {"$eq": 2}},
        {"n": {"$ne": 2}},
        {"n": {"$gt": 2}},
        {"n": {"$gte": 2}},
        {"n": {"$lt": 2.5}},
        {"n": {"$lte": 2.5}},
        {"n": {"$gt": 0, "$lt": 3}, "s": "a"},
        {"s": {"$ne": "a"}},
    ]:
        [got] = await _both(ours, reference, [SearchOp(("f",), filter=condition, limit=100)])
        assert 0 < len(got) < len(values), condition


async def test_paging_and_listing_in_key_order(make_store: Any) -> None:
    ours, reference = make_store(), InMemoryStore()
    namespaces = [("a", "p", "q"), ("a", "p", "r"), ("a", "s"), ("b",), ("b", "p")]
    puts = [PutOp(n, f"k{i}", {"i": i}) for n in namespaces for i in range(4)]
    await _both(ours, reference, puts)
    for prefix in [(), ("a",), ("a", "p")]:
        for offset, limit in [(0, 3), (3, 3), (2, 5), (18, 10), (0, 100)]:
            op = SearchOp(prefix, limit=limit, offset=offset)
            assert _norm(await ours.abatch([op])) == _norm(await reference.abatch([op]))
    for op in [
        ListNamespacesOp(limit=2, offset=1),
        ListNamespacesOp(max_depth=1),
        ListNamespacesOp(max_depth=2, limit=2, offset=1),
        ListNamespacesOp((MatchCondition("prefix", ("a", "*")),)),
        ListNamespacesOp((MatchCondition("suffix", ("p",)),)),
        ListNamespacesOp((MatchCondition("prefix", ("a",)), MatchCondition("suffix", ("r",)))),
    ]:
        assert await ours.abatch([op]) == await reference.abatch([op]), op
    assert await ours.alist_namespaces(prefix=("a",), suffix=("q",)) == [("a", "p", "q")]


async def test_reads_in_a_batch_see_the_state_before_it(make_store: Any) -> None:
    ours, reference = make_store(), InMemoryStore()
    await _both(ours, reference, [PutOp(("n",), "k", {"v": 1})])
    ops = [
        PutOp(("n",), "k", {"v": 2}),
        GetOp(("n",), "k"),
        PutOp(("n",), "k", None),
        PutOp(("n",), "k", {"v": 3}),  # the last put of an item wins
        SearchOp(("n",)),
    ]
    got = await _both(ours, reference, ops)
    assert got[1].value == {"v": 1}
    assert (await ours.aget(("n",), "k")).value == {"v": 3}  # type: ignore[union-attr]


async def test_namespace_mapping_is_reversible(make_store: Any) -> None:
    store = make_store()
    tricky = [("a/b", "c"), ("a", "b/c"), ("a%2Fb",), ("a", "b", "c")]
    for i, namespace in enumerate(tricky):
        await store.aput(namespace, f"k/{i}%", {"i": i})
    for i, namespace in enumerate(tricky):
        item = await store.aget(namespace, f"k/{i}%")
        assert item is not None and item.value == {"i": i} and item.namespace == namespace
    assert sorted(await store.alist_namespaces()) == sorted(tricky)
    found = [i.namespace for i in await store.asearch(("a",), limit=10)]
    assert sorted(found) == [("a", "b", "c"), ("a", "b/c")]
    assert [i.namespace for i in await store.asearch(("a", "b"), limit=10)] == [("a", "b", "c")]
    assert [i.namespace for i in await store.asearch(("a/b",), limit=10)] == [("a/b", "c")]
    keys = await store._calls.keys("")
    assert keys == sorted(
        ["a%2Fb/c/k%2F0%25", "a/b%2Fc/k%2F1%25", "a%252Fb/k%2F2%25", "a/b/c/k%2F3%25"]
    )


@pytest.mark.parametrize(
    "namespace", [(), ("",), ("a.b",), ("a", ""), ("nul\x00",), (1,)], ids=repr
)
async def test_colliding_labels_are_refused(make_store: Any, namespace: tuple[Any, ...]) -> None:
    store = make_store()
    with pytest.raises(InvalidNamespaceError):
        await store.abatch([PutOp(namespace, "k", {"v": 1})])
    assert await store._calls.keys("") == []


async def test_other_agents_keys_in_the_scope_are_not_items(make_store: Any) -> None:
    store = make_store()
    await store.aput(("notes",), "k", {"v": 1})
    # Keys another agent keeps in the same (global) scope id.
    await store._calls.write(
        [
            {"op": "set", "key": "plain-key", "data": {"v": 2}},
            {"op": "set", "key": "notes/text", "data": "not an object"},
        ]
    )
    assert [i.key for i in await store.asearch(())] == ["k"]
    assert await store.aget(("notes",), "text") is None
    assert await store.alist_namespaces() == [("notes",)]
