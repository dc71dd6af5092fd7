"""PostgreSQL only: the store's queries keep using the primary key as a table grows
from empty. A prepared statement's cached generic plan, made while a table is tiny,
would scan the whole table for every write until the next ANALYZE (measured: fresh
database, 16 writers, durable sets fell from ~6,000/s to ~700/s as it grew). The
writer's connection does keep generic plans (planning was ~40% of each group's time in
the database), pinned to index lookups: these tests fail without the pins."""

from __future__ import annotations

import asyncpg
import numpy as np
import pytest

from agentfield_asgi.settings import Settings
from agentfield_asgi.store import open_store
from agentfield_asgi.store.base import ClearOp, DeleteOp, IncrOp, SetOp, VectorSetOp
from agentfield_asgi.testing import ThrowawayPostgres

pytestmark = pytest.mark.postgres

GROWN = 20_000


async def _rows_scanned(url: str, table: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(
            await conn.fetchval(
                "SELECT coalesce(seq_tup_read, 0) FROM pg_stat_user_tables WHERE relname = $1",
                table,
            )
        )
    finally:
        await conn.close()


async def _grow(url: str, sql: str) -> None:
    """Fill a table behind the store's back, with no ANALYZE (as before autovacuum's)."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
        await conn.execute("SELECT pg_stat_force_next_flush()")
    finally:
        await conn.close()


async def _writes_scan_nothing(url: str, table: str, write, grow_sql: str) -> None:
    store = open_store(Settings(database_url=url))
    await store.open()
    try:
        for i in range(30):  # more than 5 runs of each statement: plans are cached now
            await write(store, f"early{i}")
        await _grow(url, grow_sql)
        before = await _rows_scanned(url, table)
        for i in range(30):
            await write(store, f"late{i}")
        # Statistics reach the view when a backend goes idle; closing flushes them.
    finally:
        await store.close()
    scanned = await _rows_scanned(url, table) - before
    assert scanned < GROWN, f"writes scanned {scanned} rows of {table} sequentially"


async def test_key_writes_use_the_index_as_the_table_grows(pg_cluster: ThrowawayPostgres) -> None:
    async def write(store, key: str) -> None:
        # Every statement of the group commit: a set, an incr and a delete (lock and read,
        # write, and the delete's join), and a clear (the transaction path, by scope).
        await store.write([SetOp("session", "s", key, b"1"), IncrOp("session", "s", key + "n")])
        await store.write([DeleteOp("session", "s", key)])
        await store.write([SetOp("session", "c", key, b"1"), ClearOp("session", "c")])

    await _writes_scan_nothing(
        pg_cluster.create_database(),
        "memory",
        write,
        "INSERT INTO memory (scope, scope_id, key, value, created_us, updated_us, version) "
        f"SELECT 'session', 'other', 'k' || i, '1', 1, 1, 1 FROM generate_series(1, {GROWN}) i",
    )


async def test_vector_writes_use_the_index_as_the_table_grows(
    pg_cluster: ThrowawayPostgres,
) -> None:
    vector = np.ones(4, dtype=np.float32)

    async def write(store, key: str) -> None:  # a group of 16, as concurrent writers make
        await store.write([VectorSetOp("session", "s", f"{key}.{i}", vector) for i in range(16)])

    await _writes_scan_nothing(
        pg_cluster.create_database(),
        "vectors",
        write,
        "INSERT INTO vectors (scope, scope_id, key, dim, embedding, created_us, updated_us) "
        f"SELECT 'session', 'other', 'k' || i, 4, '\\x00', 1, 1 FROM generate_series(1, {GROWN}) i",
    )
