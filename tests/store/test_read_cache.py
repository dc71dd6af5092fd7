"""The embedded store remembers point-read answers until a write touches their key
(store/read_cache.py): reads never see a value older than the last acknowledged write."""

from __future__ import annotations

import asyncio

from agentfield_asgi.codec import dumps
from agentfield_asgi.store.base import ClearOp, DeleteOp, IncrOp, Record, SetOp
from agentfield_asgi.store.sqlite import SQLiteStore, read_cache
from agentfield_asgi.store.sqlite.read_cache import MISS, ReadCache

from .conftest import G, put

CHAIN = [("workflow", "wf"), ("session", "s"), ("actor", "a"), G]


def record(key: str, expires_us: int | None = None, size: int = 1) -> Record:
    return Record(*G, key, b"1" * size, 1, 1, 1, expires_us=expires_us)


def test_answers_are_kept_per_chain_and_forgotten_by_key() -> None:
    cache = ReadCache()
    one, two = (G,), tuple(CHAIN)
    cache.put("k", one, record("k"), cache.generation)
    cache.put("k", two, None, cache.generation)
    cache.put("other", one, record("other"), cache.generation)
    assert cache.get("k", one, 0).key == "k"
    assert cache.get("k", two, 0) is None  # "absent" is an answer too
    assert cache.get("k", (("session", "s"),), 0) is MISS
    cache.forget(["k"])
    assert cache.get("k", one, 0) is MISS and cache.get("k", two, 0) is MISS
    assert cache.get("other", one, 0) is not MISS
    cache.clear()
    assert cache.get("other", one, 0) is MISS


def test_an_expired_record_is_no_answer() -> None:
    cache = ReadCache()
    cache.put("k", (G,), record("k", expires_us=100), cache.generation)
    assert cache.get("k", (G,), 99) is not MISS
    assert cache.get("k", (G,), 100) is MISS


def test_an_answer_read_before_a_forget_is_not_kept() -> None:
    cache = ReadCache()
    seen = cache.generation
    cache.forget(["k"])  # a write was delivered while SQLite was being read
    cache.put("k", (G,), record("k"), seen)
    assert cache.get("k", (G,), 0) is MISS


def test_the_cache_is_bounded(monkeypatch) -> None:
    monkeypatch.setattr(read_cache, "MAX_KEYS", 3)
    cache = ReadCache()
    for key in "abcd":
        cache.put(key, (G,), record(key), cache.generation)
    assert len(cache) == 3 and cache.get("a", (G,), 0) is MISS  # the oldest went first
    cache.put("big", (G,), record("big", size=read_cache.MAX_VALUE_BYTES + 1), cache.generation)
    assert cache.get("big", (G,), 0) is MISS


async def test_every_kind_of_write_is_seen_by_the_next_read(sqlite_store: SQLiteStore) -> None:
    s = sqlite_store
    await s.set(put("k", 1))
    assert (await s.get("k", [G])).data == 1
    assert (await s.get("k", CHAIN)).data == 1  # found in global, remembered
    assert await s.get("missing", [G]) is None
    await s.set(SetOp("session", "s", "k", dumps("mine")))
    assert (await s.get("k", CHAIN)).data == "mine"  # a write to another scope of the key
    assert (await s.get("k", [G])).data == 1
    await s.write([IncrOp(*G, "k", 5)])
    assert (await s.get("k", [G])).data == 6
    await s.set(put("missing", "now"))
    assert (await s.get("missing", [G])).data == "now"
    await s.write([DeleteOp(*G, "k")])
    assert await s.get("k", [G]) is None
    assert (await s.get("k", CHAIN)).data == "mine"
    await s.write([ClearOp("session", "s")])
    assert await s.get("k", CHAIN) is None


async def test_a_remembered_record_that_expires_falls_through_to_the_next_scope(
    sqlite_store: SQLiteStore,
) -> None:
    s = sqlite_store
    await s.set(put("k", "global"))
    await s.set(SetOp("session", "s", "k", dumps("session"), ttl_seconds=0.3))
    assert (await s.get("k", CHAIN)).data == "session"
    await asyncio.sleep(0.4)
    assert (await s.get("k", CHAIN)).data == "global"


async def test_concurrent_writers_and_readers_agree_with_the_database(
    sqlite_store: SQLiteStore,
) -> None:
    s = sqlite_store

    async def writer(n: int) -> None:
        for i in range(30):
            await s.set(put(f"k{i % 5}", [n, i]))

    async def reader() -> None:
        for i in range(200):
            await s.get(f"k{i % 5}", [G])
            await asyncio.sleep(0)

    await asyncio.gather(*(writer(n) for n in range(4)), reader(), reader())
    for i in range(5):
        stored = await s.get_many([f"k{i}"], [G])  # get_many always asks SQLite
        assert (await s.get(f"k{i}", [G])).data == stored[f"k{i}"].data
