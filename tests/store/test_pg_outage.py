"""PostgreSQL only: the store survives the database going away and coming back.

Uses its own throwaway cluster (the shared one must not be restarted under other tests).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import asyncpg
import httpx
import pytest

from agentfield_asgi.errors import StorageUnavailable
from agentfield_asgi.server.app import create_memory_app
from agentfield_asgi.settings import Settings
from agentfield_asgi.store import open_store
from agentfield_asgi.store.base import Event, EventFilter, SetOp
from agentfield_asgi.store.postgres import APPLICATION_NAME, PostgresStore
from agentfield_asgi.testing import ThrowawayPostgres, free_port

pytestmark = pytest.mark.postgres
G = [("global", "global")]


@pytest.fixture
def own_cluster() -> Iterator[ThrowawayPostgres]:
    """A cluster this module may stop and start (fails, never skips, without PostgreSQL)."""
    with ThrowawayPostgres() as cluster:
        yield cluster


async def test_open_raises_storage_unavailable_when_database_is_down() -> None:
    store = open_store(Settings(database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/x"))
    with pytest.raises(StorageUnavailable) as info:
        await store.open()
    assert info.value.status == 503
    with pytest.raises(StorageUnavailable):
        await store.get("k", G)
    with pytest.raises(StorageUnavailable):
        await store.set(SetOp("global", "global", "k", b"1"))


async def test_restart_raises_503_then_recovers_without_reopening(
    own_cluster: ThrowawayPostgres, eventually, until_ok
) -> None:
    url = own_cluster.create_database()
    store = open_store(Settings(database_url=url))
    assert isinstance(store, PostgresStore)
    await store.open()
    service = create_memory_app(url)
    await service.start()
    transport = httpx.ASGITransport(app=service.app)
    client = httpx.AsyncClient(transport=transport, base_url="http://memory")
    try:
        seen: list[Event] = []
        store.watch(seen.extend)
        await store.set(SetOp("global", "global", "before", b"1"))

        await asyncio.to_thread(own_cluster.stop)
        with pytest.raises(StorageUnavailable):
            await store.set(SetOp("global", "global", "lost", b"1"))
        with pytest.raises(StorageUnavailable):
            await store.get("before", G)
        with pytest.raises(StorageUnavailable):
            await store.list("global", "global")
        with pytest.raises(StorageUnavailable):
            await store.history(EventFilter(), since_us=None, since_id=None, limit=10)
        response = await client.post("/api/v1/memory/set", json={"key": "k", "data": 1})
        assert response.status_code == 503
        assert response.json()["code"] == "storage_unavailable"
        assert set(response.json()) == {"error", "code", "details"}
        response = await client.post("/api/v1/memory/get", json={"key": "before"})
        assert response.status_code == 503

        await asyncio.to_thread(own_cluster.start)
        await until_ok(lambda: store.set(SetOp("global", "global", "after", b"2")))
        assert (await store.get("before", G)) is not None
        assert (await store.get("after", G)) is not None
        assert await store.get("lost", G) is None
        # The feed and its listener came back by themselves.
        newest = await store.last_event_id()
        await eventually(lambda: bool(seen) and seen[-1].id >= newest)
        await eventually(lambda: store.listener_pid is not None)
        assert [e.key for e in seen] == ["before", "after"]

        async def http_set() -> httpx.Response:
            response = await client.post("/api/v1/memory/set", json={"key": "k", "data": 1})
            if response.status_code == 503:
                raise StorageUnavailable("still down")
            return response

        assert (await until_ok(http_set)).status_code == 200
    finally:
        await client.aclose()
        await service.stop()
        await store.close()


async def test_lazy_start_retries_after_database_comes_up(
    own_cluster: ThrowawayPostgres,
) -> None:
    url = own_cluster.create_database()
    await asyncio.to_thread(own_cluster.stop)
    service = create_memory_app(url)
    transport = httpx.ASGITransport(app=service.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://memory") as client:
        try:
            response = await client.post("/api/v1/memory/set", json={"key": "k", "data": 1})
            assert response.status_code == 503
            assert response.json()["code"] == "storage_unavailable"
            assert not service.started
            await asyncio.to_thread(own_cluster.start)
            response = await client.post("/api/v1/memory/set", json={"key": "k", "data": 1})
            assert response.status_code == 200
            response = await client.post("/api/v1/memory/get", json={"key": "k"})
            assert response.status_code == 200 and response.json()["data"] == 1
        finally:
            await service.stop()


async def test_killed_pool_connections_are_replaced_without_errors(
    pg_cluster: ThrowawayPostgres,
) -> None:
    """Connections dropped by the server (idle timeout, failover, an admin) cost no request:
    nothing had been sent on them, so the store reconnects and carries on."""
    url = pg_cluster.create_database()
    store = open_store(Settings(database_url=url, pg_pool_min=2, pg_pool_max=2))
    await store.open()
    admin = await asyncpg.connect(url)
    try:
        await store.set(SetOp("global", "global", "k", b"1"))
        for _ in range(3):
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name = $1",
                APPLICATION_NAME,
            )
            assert killed >= 1
            await store.set(SetOp("global", "global", "k", b"2"))
            assert (await store.get("k", G)) is not None
    finally:
        await admin.close()
        await store.close()
