"""Reading every stored row from one snapshot, and loading dumped rows back, per backend.

What both backends share for export and import (``agentfield_asgi/portability.py`` turns
these rows into JSON lines and back, over the Store interface):

* :data:`TABLES`: the dumped tables and their columns, in row order;
* rows travel *normalised*: JSON columns as UTF-8 bytes (or None), embeddings as bytes,
  numbers as ints, whichever backend they come from or go to;
* a load inserts rows as they are (versions, timestamps, TTLs, event ids kept) and leaves
  rows already present alone, so running an import twice changes nothing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg

from .pg_batch import EVENT_LOCK

DumpRow = tuple[Any, ...]

TABLES: dict[str, tuple[str, ...]] = {
    "memory": (
        "scope",
        "scope_id",
        "key",
        "value",
        "created_us",
        "updated_us",
        "version",
        "metadata",
        "expires_us",
    ),
    "vectors": (
        "scope",
        "scope_id",
        "key",
        "dim",
        "embedding",
        "metadata",
        "created_us",
        "updated_us",
    ),
    "events": ("id", "ts_us", "scope", "scope_id", "key", "action", "data", "previous", "metadata"),
}
"""Dumped tables (in dump order) and their columns (in row order)."""

JSON_COLUMNS: dict[str, frozenset[int]] = {
    "memory": frozenset({3, 7}),
    "vectors": frozenset({5}),
    "events": frozenset({6, 7, 8}),
}
"""Positions of the JSON columns of each table's rows."""

ORDER = {"memory": "scope, scope_id, key", "vectors": "scope, scope_id, key", "events": "id"}


def select_sql(table: str) -> str:
    return f"SELECT {', '.join(TABLES[table])} FROM {table} ORDER BY {ORDER[table]}"


def _normalise(table: str, row: Sequence[Any]) -> DumpRow:
    json_at = JSON_COLUMNS[table]
    return tuple(
        v.encode()
        if i in json_at and isinstance(v, str)
        else bytes(v)
        if isinstance(v, memoryview)
        else v
        for i, v in enumerate(row)
    )


# ---------------------------------------------------------------- SQLite


async def sqlite_snapshot(
    conn: sqlite3.Connection, tables: Sequence[str], batch_size: int
) -> AsyncIterator[tuple[str, list[DumpRow]]]:
    """``(table, rows)`` batches of ``tables`` from one read transaction on ``conn`` (a
    connection of its own: in WAL mode its snapshot holds from the first read to the end)."""
    import asyncio

    await asyncio.to_thread(conn.execute, "BEGIN")
    try:
        for table in tables:
            cursor = await asyncio.to_thread(conn.execute, select_sql(table))
            while rows := await asyncio.to_thread(cursor.fetchmany, batch_size):
                yield table, [_normalise(table, r) for r in rows]
    finally:
        await asyncio.to_thread(conn.execute, "COMMIT")


def sqlite_load(conn: sqlite3.Connection, table: str, rows: Sequence[DumpRow]) -> int:
    """A write call (runs on the writer's connection): insert ``rows``, keeping present ones.
    Returns how many were new."""
    columns = TABLES[table]
    json_at = JSON_COLUMNS[table]
    query = (
        f"INSERT OR IGNORE INTO {table} ({', '.join(columns)}) "
        f"VALUES ({', '.join('?' * len(columns))})"
    )
    before = conn.total_changes
    conn.executemany(
        query,
        (
            tuple(v.decode() if i in json_at and v is not None else v for i, v in enumerate(row))
            for row in rows
        ),
    )
    return conn.total_changes - before


# ---------------------------------------------------------------- PostgreSQL


async def pg_snapshot(
    pool: asyncpg.Pool, tables: Sequence[str], batch_size: int
) -> AsyncIterator[tuple[str, list[DumpRow]]]:
    """``(table, rows)`` batches of ``tables`` from one REPEATABLE READ transaction, read
    through server-side cursors (constant memory)."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        for table in tables:
            cursor = await conn.cursor(select_sql(table))
            while rows := await cursor.fetch(batch_size):
                yield table, [_normalise(table, r) for r in rows]


PG_TYPES: dict[str, tuple[str, ...]] = {
    "memory": ("text", "text", "text", "jsonb", "bigint", "bigint", "bigint", "jsonb", "bigint"),
    "vectors": ("text", "text", "text", "integer", "bytea", "jsonb", "bigint", "bigint"),
    "events": ("bigint", "bigint", "text", "text", "text", "text", "jsonb", "jsonb", "jsonb"),
}


def _pg_insert_sql(table: str) -> str:
    columns = TABLES[table]
    arrays = ", ".join(f"${i}::{t}[]" for i, t in enumerate(PG_TYPES[table], 1))
    conflict = "(id)" if table == "events" else "(scope, scope_id, key)"
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) SELECT * FROM unnest({arrays}) "
        f"ON CONFLICT {conflict} DO NOTHING"
    )


async def pg_load(pool: asyncpg.Pool, table: str, rows: Sequence[DumpRow]) -> int:
    """Insert ``rows`` in one statement under the writers' lock, keeping present ones;
    after events, move the id sequence past the newest id. Returns how many were new."""
    if not rows:
        return 0
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(f"SELECT pg_advisory_xact_lock({EVENT_LOCK})")
        columns = [list(c) for c in zip(*rows, strict=True)]
        status = await conn.execute(_pg_insert_sql(table), *columns)
        if table == "events":
            await conn.execute(
                "SELECT setval(pg_get_serial_sequence('events', 'id'), "
                "GREATEST((SELECT MAX(id) FROM events), 1))"
            )
        return int(status.split()[-1])
