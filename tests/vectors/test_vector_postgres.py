"""PostgreSQL specifics: which mode runs, the HNSW path of pgvector (and its exact
fallbacks), and writes of other instances reaching a scope another instance holds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from agentfield_asgi.server.app import MemoryService, create_memory_app
from agentfield_asgi.store.base import VectorSetOp
from agentfield_asgi.store.postgres import pgvector as vector_pg
from agentfield_asgi.testing import ThrowawayPostgres

from .conftest import VectorAPI, client_for


async def test_the_service_says_which_vector_mode_it_runs(
    client: httpx.AsyncClient, backend: str
) -> None:
    mode = (await client.get("/api/v1/health")).json()["vectors"]
    if backend == "pgvector":
        assert mode.startswith("pgvector ") and "HNSW" in mode
    else:
        assert mode.startswith("exact (numpy, in memory")
    if backend == "postgres":
        assert "no pgvector" in mode  # and why


async def _wait_for(condition, seconds: float = 60.0) -> None:
    for _ in range(int(seconds * 20)):
        if await condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


@pytest.fixture
async def pgvector_service(pgvector_cluster: ThrowawayPostgres) -> AsyncIterator[MemoryService]:
    service = create_memory_app(pgvector_cluster.create_database())
    await service.start()
    yield service
    await service.stop()


async def test_hnsw_answers_large_scopes_and_exact_search_the_rest(
    pgvector_service: MemoryService, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = pgvector_service.store
    rng = np.random.default_rng(3)
    n, dim = 3000, 16
    data = rng.standard_normal((n, dim)).astype(np.float32)
    for start in range(0, n, 250):
        await store.write(
            [
                VectorSetOp(
                    "session",
                    "big",
                    f"v{i}",
                    data[i],
                    {"rare": True} if i in (7, 1500, 2999) else {"i": i},
                )
                for i in range(start, start + 250)
            ]
        )
    small = data[:5] + 0.01
    await store.write([VectorSetOp("session", "small", f"s{i}", small[i], {}) for i in range(5)])

    async def all_indexed() -> bool:
        pending = await store._call(
            lambda conn: conn.fetchval("SELECT count(*) FROM vectors WHERE gen = 0")
        )
        return pending == 0 and store._vectors._generations.get(dim, (0, 0))[1] > 0

    await _wait_for(all_indexed)  # the indexer builds a generation once writes pause
    hnsw_calls = []
    original = vector_pg.PgvectorVectors._hnsw

    async def spy(self, *args, **kwargs):
        rows = await original(self, *args, **kwargs)
        hnsw_calls.append(len(rows))
        return rows

    monkeypatch.setattr(vector_pg.PgvectorVectors, "_hnsw", spy)
    async with client_for(pgvector_service) as client:
        api = VectorAPI(client).with_headers(X_Session_ID="big")
        found = 0
        for i in range(0, n, 150):  # a stored vector finds itself first
            hits = (await api.search(data[i].tolist(), top_k=10)).json()
            assert hits[0]["score"] == pytest.approx(1.0, abs=1e-6)
            found += hits[0]["key"] == f"v{i}"
            truth = np.argsort(-(data @ data[i]) / np.linalg.norm(data, axis=1))[:10]
            assert len({h["key"] for h in hits} & {f"v{t}" for t in truth}) >= 8  # recall@10
        assert found == 20
        assert len(hnsw_calls) == 20 and min(hnsw_calls) == 28  # 2k + 8 candidates
        # a filter that leaves HNSW short falls back to exact: all three rare rows
        rare = await api.keys(data[0].tolist(), top_k=10, filters={"rare": True})
        assert sorted(rare) == ["v1500", "v2999", "v7"]
        # a vector written now is pending (not yet in the HNSW index) and still found
        fresh = data[42] + 0.001
        assert (await api.set("fresh", fresh.tolist())).status_code == 200
        assert (await api.keys(fresh.tolist(), top_k=2)) == ["fresh", "v42"]
        # a small scope in the same table is searched exactly
        small_keys = (
            await VectorAPI(client)
            .with_headers(X_Session_ID="small")
            .keys(data[2].tolist(), top_k=10)
        )
        assert small_keys[0] == "s2" and sorted(small_keys) == [f"s{i}" for i in range(5)]


@pytest.mark.parametrize(
    ("pending", "indexed", "writing", "wanted", "action"),
    [
        (0, 0, False, False, None),  # nothing to index
        (50_000, 0, True, False, None),  # a load no one searches: wait for it to pause
        (50_000, 10_000, True, False, None),
        (50, 0, True, True, "build"),  # searched and no index yet: build one now
        (25_000, 10_000, True, True, "build"),  # pending outnumber indexed twice
        (15_000, 10_000, True, True, None),  # not yet: the next build would redo these
        (9_000, 0, False, False, "build"),  # writes paused: index everything
        (10_001, 100_000, False, False, "build"),  # many pending: a new generation
        (500, 100_000, False, False, "flip"),  # a few: into the current generation
    ],
)
def test_when_the_indexer_builds(
    pending: int, indexed: int, writing: bool, wanted: bool, action: str | None
) -> None:
    assert vector_pg.indexing_action(pending, indexed, writing=writing, wanted=wanted) == action


async def test_a_load_no_one_searches_waits_for_a_search_or_a_pause(
    pgvector_service: MemoryService,
) -> None:
    store = pgvector_service.store
    rng = np.random.default_rng(5)
    vectors = store._vectors

    async def write_for(seconds: float, first: int) -> int:
        """Keep writing (well inside the 2 s that count as a pause) for ``seconds``."""
        n = first
        deadline = asyncio.get_running_loop().time() + seconds
        while asyncio.get_running_loop().time() < deadline:
            batch = rng.standard_normal((20, 8)).astype(np.float32)
            await store.write(
                [VectorSetOp("session", "load", f"v{n + i}", v) for i, v in enumerate(batch)]
            )
            n += len(batch)
            await asyncio.sleep(0.1)
        return n

    async def generation() -> int:
        return await store._call(lambda conn: vectors._valid_generation(conn, 8, fresh=True))

    n = await write_for(3.5, 0)  # the indexer looked at least twice meanwhile
    assert await generation() == 0
    async with client_for(pgvector_service) as client:
        api = VectorAPI(client).with_headers(X_Session_ID="load")
        assert len(await api.keys(rng.standard_normal(8).tolist(), top_k=5)) == 5
    # Searched: built while the writes go on.
    for _ in range(30):
        n = await write_for(1.0, n)
        if await generation():
            break
    assert await generation() == 1


@pytest.fixture(params=["postgres", "pgvector"])
def shared_url(request: pytest.FixtureRequest) -> str:
    name = "pgvector_cluster" if request.param == "pgvector" else "pg_cluster"
    cluster: ThrowawayPostgres = request.getfixturevalue(name)
    return cluster.create_database()


async def test_writes_of_another_instance_reach_a_held_scope(shared_url: str) -> None:
    first, second = create_memory_app(shared_url), create_memory_app(shared_url)
    await first.start()
    await second.start()
    try:
        async with client_for(first) as a, client_for(second) as b:
            writer = VectorAPI(a).with_headers(X_Actor_ID="shared")
            reader = VectorAPI(b).with_headers(X_Actor_ID="shared")
            await writer.set("one", [1.0, 0.0], {"v": 1})
            await writer.set("two", [0.0, 1.0])
            assert await reader.keys([1.0, 0.0]) == ["one", "two"]  # now held by the reader
            await writer.set("one", [-1.0, 0.0], {"v": 2})
            await writer.delete("two")
            await writer.set("three", [0.9, 0.1])

            async def caught_up() -> bool:
                hits = (await reader.search([1.0, 0.0])).json()
                return [(h["key"], h["metadata"]) for h in hits] == [
                    ("three", {}),
                    ("one", {"v": 2}),
                ]

            await _wait_for(caught_up, 20.0)
            # and the reader's own writes keep working on top
            await reader.set("four", [1.0, 0.01])
            assert (await reader.keys([1.0, 0.0]))[0] == "four"
    finally:
        await second.stop()
        await first.stop()


def test_pgserver_binaries_are_used_for_the_pgvector_cluster(
    pgvector_cluster: ThrowawayPostgres,
) -> None:
    assert "pgserver" in Path(pgvector_cluster.bindir).parts


async def test_rows_stored_without_pgvector_are_filled_in_at_start(
    pgvector_cluster: ThrowawayPostgres,
) -> None:
    url = pgvector_cluster.create_database()
    first = create_memory_app(url)
    await first.start()
    async with client_for(first) as client:
        api = VectorAPI(client).with_headers(X_Session_ID="old")
        await api.set("a", [1.0, 0.0], {"n": 1})
        await api.set("b", [0.0, 1.0])
    # as a server without pgvector would have left them
    await first.store._call(lambda conn: conn.execute("UPDATE vectors SET vec = NULL"))
    await first.stop()
    again = create_memory_app(url)
    await again.start()
    try:
        async with client_for(again) as client:
            api = VectorAPI(client).with_headers(X_Session_ID="old")
            hits = (await api.search([1.0, 0.1])).json()
            assert [(h["key"], h["metadata"]) for h in hits] == [("a", {"n": 1}), ("b", {})]
            assert hits[0]["score"] == pytest.approx(1 / np.sqrt(1.01))
    finally:
        await again.stop()
