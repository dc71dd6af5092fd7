"""PostgreSQL only: several store instances on one database (as several servers would
be) see every committed event exactly once, in id order, through LISTEN/NOTIFY."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest

from agentfield_asgi.codec import dumps
from agentfield_asgi.errors import BadRequest
from agentfield_asgi.settings import Settings
from agentfield_asgi.store import open_store
from agentfield_asgi.store.base import Event, SetOp
from agentfield_asgi.store.postgres import PostgresStore
from agentfield_asgi.testing import ThrowawayPostgres

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_url(pg_cluster: ThrowawayPostgres) -> str:
    return pg_cluster.create_database()


@pytest.fixture
async def opened() -> AsyncIterator[Callable[[PostgresStore], Awaitable[PostgresStore]]]:
    """Open stores for a test and close them all afterwards."""
    stores: list[PostgresStore] = []

    async def open_(store: PostgresStore) -> PostgresStore:
        await store.open()
        stores.append(store)
        return store

    yield open_
    for store in stores:
        await store.close()


def pg_store(url: str) -> PostgresStore:
    store = open_store(Settings(database_url=url))
    assert isinstance(store, PostgresStore)
    return store


def newest_seen(seen: list[Event]) -> int:
    return seen[-1].id if seen else 0


async def test_two_instances_deliver_every_event_once_in_id_order(
    pg_url: str, opened, eventually
) -> None:
    a = await opened(pg_store(pg_url))
    b = await opened(pg_store(pg_url))
    seen_a: list[Event] = []
    seen_b: list[Event] = []
    a.watch(seen_a.extend)
    b.watch(seen_b.extend)

    async def writer(store: PostgresStore, name: str, task: int) -> None:
        for i in range(100):
            await store.set(SetOp("session", name, f"t{task}-{i}", dumps(i)))

    await asyncio.gather(
        *(writer(a, "from-a", t) for t in range(8)), *(writer(b, "from-b", t) for t in range(8))
    )
    table = await a.events_after(0, 10_000)
    assert len(table) == 1600
    ids = [e.id for e in table]
    await eventually(lambda: newest_seen(seen_a) >= ids[-1] and newest_seen(seen_b) >= ids[-1])
    assert [e.id for e in seen_a] == ids  # each once, increasing, nothing skipped
    assert [e.id for e in seen_b] == ids
    assert {e.scope_id for e in seen_a} == {"from-a", "from-b"}
    # handed over by the writer or read back by the feed, an event is the stored one
    stored = [e.to_json() for e in table]
    assert [e.to_json() for e in seen_a] == stored
    assert [e.to_json() for e in seen_b] == stored


async def test_own_events_are_not_read_back(pg_url: str, opened) -> None:
    """A lone instance hands its groups' events to its watchers as the write statement
    returned them, instead of reading each group back from the table."""
    store = await opened(pg_store(pg_url))
    store._feed.poll_seconds = 3600.0  # no safety poll during the test (one may be under way)
    reads = 0
    read_after = store._feed._read_after

    async def counting(after: int, limit: int) -> list[Event]:
        nonlocal reads
        reads += 1
        return await read_after(after, limit)

    store._feed._read_after = counting
    seen: list[Event] = []
    store.watch(seen.extend)
    for i in range(30):
        await store.set(SetOp("session", "own", f"k{i}", dumps({"n": i, "b": [1, 2]})))
    assert [e.key for e in seen] == [f"k{i}" for i in range(30)]  # delivered as acknowledged
    assert reads <= 1  # the poll already under way; one read per write would be 30
    assert [e.to_json() for e in seen] == [e.to_json() for e in await store.events_after(0, 100)]


async def test_notify_wakes_other_instances_and_listener_reconnects(
    pg_url: str, opened, eventually
) -> None:
    # With polling effectively off, only NOTIFY or the reconnect catch-up can deliver
    # another instance's events to ``reader``.
    reader = await opened(PostgresStore(pg_url, min_size=1, max_size=4, poll_seconds=3600))
    writer = await opened(pg_store(pg_url))
    seen: list[Event] = []
    reader.watch(seen.extend)
    await eventually(lambda: reader.listener_pid is not None)

    await writer.set(SetOp("global", "global", "first", b"1"))
    await eventually(lambda: newest_seen(seen) >= 1)

    old_pid = reader.listener_pid
    admin = await asyncpg.connect(pg_url)
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", old_pid)
    finally:
        await admin.close()
    for i in range(20):  # some of these commit while nobody listens on ``reader``
        await writer.set(SetOp("global", "global", f"while-down-{i}", dumps(i)))
    newest = await writer.last_event_id()
    await eventually(lambda: newest_seen(seen) >= newest)
    await eventually(lambda: reader.listener_pid not in (None, old_pid))

    await writer.set(SetOp("global", "global", "after", b"2"))
    newest = await writer.last_event_id()
    await eventually(lambda: newest_seen(seen) >= newest)
    assert [e.id for e in seen] == [e.id for e in await writer.events_after(0, 1000)]


async def test_value_the_database_rejects_fails_alone(pg_url: str, opened, eventually) -> None:
    """JSONB refuses NUL characters and invalid JSON (SQLite would store them): the group
    is redone unit by unit and only the offending units fail."""
    store = await opened(pg_store(pg_url))
    units = [[SetOp("global", "global", f"ok{i}", dumps(i))] for i in range(10)]
    units.insert(3, [SetOp("global", "global", "nul", b'"a\\u0000b"')])
    units.insert(
        7, [SetOp("global", "global", "ok-too", b"1"), SetOp("global", "global", "bad", b"{")]
    )
    results = await asyncio.gather(*(store.write(u) for u in units), return_exceptions=True)
    assert isinstance(results[3], BadRequest) and results[3].status == 400
    assert isinstance(results[7], BadRequest)
    assert [i for i, r in enumerate(results) if isinstance(r, BaseException)] == [3, 7]
    got = await store.get_many(
        [f"ok{i}" for i in range(10)] + ["nul", "ok-too", "bad"], [("global", "global")]
    )
    assert sorted(got) == sorted(f"ok{i}" for i in range(10))
    events = await store.events_after(0, 100)
    assert sorted(e.key for e in events) == sorted(f"ok{i}" for i in range(10))
    seen: list[Event] = []
    store.watch(seen.extend)
    await store.set(SetOp("global", "global", "later", b"1"))
    await eventually(lambda: any(e.key == "later" for e in seen))  # the feed is unharmed
