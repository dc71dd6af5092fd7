"""The in-memory index on its own: exactness against brute force through appends,
replacements, deletions, growth and compaction; snapshots; loading races."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from agentfield_asgi.store import vector_index, vector_scope
from agentfield_asgi.store.base import ClearOp, VectorDeleteOp, VectorRecord, VectorSetOp
from agentfield_asgi.store.vector_index import VectorIndex, exact_distances, nearest
from agentfield_asgi.store.vector_scope import ScopeVectors, filter_term

METRICS = ["cosine", "dot", "l2"]


def brute_force(
    model: dict[str, tuple[np.ndarray, dict]], query: np.ndarray, k: int, metric: str, flt=None
):
    keys = [
        key
        for key, (_, meta) in model.items()
        if not flt
        or all(
            name in meta and filter_term(name, meta[name]) == filter_term(name, v)
            for name, v in flt.items()
        )
    ]
    if not keys:
        return []
    dist = exact_distances(np.array([model[key][0] for key in keys]), query, metric)
    return sorted(zip(dist.tolist(), keys, strict=True))[:k]


def search(vectors: ScopeVectors, query: np.ndarray, k: int, metric: str, flt=None):
    snap = vectors.snapshot(flt)
    if snap is None:
        return []
    return [(dist, snap.keys[row]) for row, dist in nearest(snap, query, k, metric)]


@pytest.mark.parametrize("metric", METRICS)
def test_random_operations_match_brute_force(metric: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vector_scope, "COMPACT_MIN_DEAD", 8)  # compact often
    rng = np.random.default_rng(7)
    dim = 8
    vectors = ScopeVectors(dim)
    model: dict[str, tuple[np.ndarray, dict]] = {}
    capacities = set()
    for step in range(3000):
        action = rng.random()
        key = f"k{rng.integers(0, 150)}"
        if action < 0.65:
            embedding = rng.standard_normal(dim).astype(np.float32)
            meta = {"group": int(rng.integers(0, 4)), "even": bool(step % 2 == 0)}
            vectors.upsert(key, embedding, meta, step, step)
            model[key] = (embedding, meta)
        else:
            assert vectors.remove(key) == (key in model)
            model.pop(key, None)
        capacities.add(len(vectors.matrix))
        assert len(vectors) == len(model)
        if step % 97 == 0:
            query = rng.standard_normal(dim).astype(np.float32)
            for flt in (None, {"group": 2}, {"group": 1, "even": True}):
                got = search(vectors, query, 5, metric, flt)
                want = brute_force(model, query, 5, metric, flt)
                assert [k for _, k in got] == [k for _, k in want]
                assert [d for d, _ in got] == pytest.approx(
                    [d for d, _ in want], rel=1e-9, abs=1e-9
                )
    assert vectors.count - len(vectors) == vectors.dead
    assert len(capacities) > 3  # grew (and compacted) along the way


def test_growth_is_geometric_and_compaction_gives_memory_back() -> None:
    vectors = ScopeVectors(4)
    reallocations = 0
    matrix = vectors.matrix
    for i in range(10_000):
        vectors.upsert(f"k{i}", np.ones(4, np.float32), {}, i, i)
        if vectors.matrix is not matrix:
            reallocations += 1
            matrix = vectors.matrix
    assert reallocations < 25  # 16 * 1.5**n: no copy per insert
    assert len(vectors.matrix) < 1.6 * 10_000
    for i in range(9_500):
        vectors.remove(f"k{i}")
    assert len(vectors) == 500
    assert len(vectors.matrix) < 2_000  # compacted on the way down


def test_snapshot_is_unaffected_by_later_writes() -> None:
    vectors = ScopeVectors(2)
    vectors.upsert("a", np.array([1, 0], np.float32), {"t": 1}, 1, 1)
    vectors.upsert("b", np.array([0, 1], np.float32), {"t": 1}, 1, 1)
    snap = vectors.snapshot(None)
    filtered = vectors.snapshot({"t": 1})
    vectors.upsert("a", np.array([-1, 0], np.float32), {"t": 2}, 2, 2)  # replace
    vectors.remove("b")
    for i in range(1000):  # forces growth and compaction
        vectors.upsert(f"n{i}", np.array([1, 0], np.float32), {}, 3, 3)
        vectors.remove(f"n{i}")
    query = np.array([1, 0], np.float32)
    for old in (snap, filtered):
        found = nearest(old, query, 10, "cosine")
        assert [(old.keys[row], old.metadata[row]) for row, _ in found] == [
            ("a", {"t": 1}),
            ("b", {"t": 1}),
        ]
    now = vectors.snapshot(None)
    assert [now.keys[row] for row, _ in nearest(now, query, 10, "cosine")] == ["a"]


def test_filter_terms_follow_json_equality() -> None:
    assert filter_term("n", 1) == filter_term("n", 1.0)
    assert filter_term("n", 1) != filter_term("n", True)
    assert filter_term("n", 0) != filter_term("n", False)
    assert filter_term("o", {"a": 1, "b": [1.0, "x"]}) == filter_term(
        "o", {"b": [1, "x"], "a": 1.0}
    )
    assert filter_term("o", {"a": 1}) != filter_term("p", {"a": 1})
    assert filter_term("s", "1") != filter_term("s", 1)
    assert filter_term("s", None) != filter_term("s", "null")


def test_ties_break_by_key_and_top_k_cuts_exactly() -> None:
    vectors = ScopeVectors(2)
    for key in ("d", "b", "a", "c"):
        vectors.upsert(key, np.array([1, 1], np.float32), {}, 0, 0)
    assert [k for _, k in search(vectors, np.array([1, 1], np.float32), 3, "l2")] == ["a", "b", "c"]


def _set(scope_id: str, key: str, embedding: list[float], meta: dict | None = None):
    op = VectorSetOp("session", scope_id, key, np.array(embedding, np.float32), meta or {})
    return op, VectorRecord("session", scope_id, key, meta or {}, 1, 1)


async def test_writes_during_a_load_are_applied_after_it() -> None:
    release = threading.Event()
    loads = []

    async def loader(scope: str, scope_id: str) -> ScopeVectors:
        loads.append(scope_id)
        await asyncio.to_thread(release.wait, 10)
        vectors = ScopeVectors(2)  # what the database held when it was read
        vectors.upsert("old", np.array([1, 0], np.float32), {}, 0, 0)
        vectors.upsert("doomed", np.array([0.9, 0.1], np.float32), {}, 0, 0)
        return vectors

    index = VectorIndex(loader)
    query = np.array([1, 0], np.float32)
    first = asyncio.create_task(
        index.search("session", "s", query, top_k=10, filters=None, metric="cosine")
    )
    second = asyncio.create_task(
        index.search("session", "s", query, top_k=10, filters=None, metric="cosine")
    )
    await asyncio.sleep(0.05)
    op, result = _set("s", "new", [0.8, 0.2])
    index.apply(
        [op, VectorDeleteOp("session", "s", "doomed"), ClearOp("session", "other")],
        [result, True, 0],
    )
    release.set()
    for hits in await asyncio.gather(first, second):
        assert [h.key for h in hits] == ["old", "new"]
    assert loads == ["s"]  # one load for both searches
    index.apply([ClearOp("session", "s")], [0])
    release.clear()
    loader_result = asyncio.create_task(
        index.search("session", "s", query, top_k=1, filters=None, metric="dot")
    )
    await asyncio.sleep(0.05)
    release.set()
    assert [h.key for h in await loader_result] == ["old"]  # cleared scopes are read again
    index.close()


async def test_large_scopes_are_scored_off_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    data = rng.standard_normal((3000, 64)).astype(np.float32)

    async def loader(scope: str, scope_id: str) -> ScopeVectors:
        vectors = ScopeVectors(64)
        for i, row in enumerate(data):
            vectors.upsert(f"k{i}", row, {"odd": i % 2 == 1}, 0, 0)
        return vectors

    threads = []
    original = vector_index.nearest

    def spy(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return original(*args, **kwargs)

    ranges = []
    original_range = vector_index.dot_range

    def range_spy(snap, query, out, lo, hi):
        ranges.append((lo, hi))
        return original_range(snap, query, out, lo, hi)

    monkeypatch.setattr(vector_index, "nearest", spy)
    monkeypatch.setattr(vector_index, "dot_range", range_spy)
    monkeypatch.setattr(vector_index, "SPLIT_FLOATS", 1 << 12)
    index = VectorIndex(loader, workers=3)
    query = rng.standard_normal(64).astype(np.float32)
    model = {f"k{i}": (row, {"odd": i % 2 == 1}) for i, row in enumerate(data)}
    for flt, metric in ((None, "cosine"), ({"odd": True}, "l2")):
        ranges.clear()
        hits = await index.search("actor", "a", query, top_k=7, filters=flt, metric=metric)
        want = brute_force(model, query, 7, metric, flt)
        assert [h.key for h in hits] == [k for _, k in want]
        assert [h.distance for h in hits] == pytest.approx([d for d, _ in want])
        size = 1500 if flt else 3000
        assert sorted(ranges) == [(0, size // 3), (size // 3, 2 * size // 3), (2 * size // 3, size)]
    assert threads and all(name.startswith("agentfield-vectors") for name in threads)
    index.close()


async def test_keys_changed_elsewhere_are_read_again_before_a_search() -> None:
    database = {  # what other processes committed
        "a": ("a", 2, np.array([1, 0], np.float32), {"v": 1}, 1, 1),
        "b": ("b", 2, np.array([0, 1], np.float32), {}, 1, 1),
    }
    reads: list[list[str]] = []

    async def loader(scope: str, scope_id: str) -> ScopeVectors:
        vectors = ScopeVectors(2)
        for key, _, embedding, meta, created, updated in database.values():
            vectors.upsert(key, embedding, meta, created, updated)
        return vectors

    async def refresher(scope: str, scope_id: str, keys: list[str]):
        reads.append(keys)
        return [database[k] for k in keys if k in database]

    index = VectorIndex(loader, refresher=refresher)
    query = np.array([1, 0], np.float32)
    index.mark_changed("session", "s", "a")  # not held yet: nothing to do
    assert [
        h.key
        for h in await index.search("session", "s", query, top_k=5, filters=None, metric="dot")
    ] == ["a", "b"]
    assert reads == []
    database["a"] = ("a", 2, np.array([-1, 0], np.float32), {"v": 2}, 1, 2)
    del database["b"]
    database["c"] = ("c", 2, np.array([0.5, 0.5], np.float32), {}, 3, 3)
    for key in ("a", "b", "c"):
        index.mark_changed("session", "s", key)
    hits = await index.search("session", "s", query, top_k=5, filters=None, metric="dot")
    assert [(h.key, h.metadata) for h in hits] == [("c", {}), ("a", {"v": 2})]
    assert reads == [["a", "b", "c"]]
    await index.search("session", "s", query, top_k=5, filters=None, metric="dot")
    assert len(reads) == 1  # nothing changed since
    index.close()


async def test_a_load_begun_before_forget_is_not_kept() -> None:
    """forget() stands for writes the index never saw: a scope read before it is not
    installed (its waiters still get what was read), and the next use reads again."""
    release = asyncio.Event()
    loads: list[int] = []

    async def loader(scope: str, scope_id: str) -> ScopeVectors:
        loads.append(1)
        if len(loads) == 1:
            await release.wait()
        vectors = ScopeVectors(2)
        vectors.extend(["a"], np.array([[1.0, 0.0]], dtype=np.float32), [{}], [1], [1])
        return vectors

    index = VectorIndex(loader)
    first = asyncio.create_task(index.scope("global", "global"))
    await asyncio.sleep(0)
    waiter = asyncio.create_task(index.scope("global", "global"))
    await asyncio.sleep(0)
    index.forget()
    release.set()
    got, waited = await first, await waiter
    assert got is not None and waited is got and len(got) == 1
    assert index.loaded_scopes == 0
    assert await index.scope("global", "global") is not None
    assert len(loads) == 2 and index.loaded_scopes == 1
