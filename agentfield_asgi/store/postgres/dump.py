"""PostgreSQL: every stored row from one REPEATABLE READ snapshot, and dumped rows loaded
back under the writers' lock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import asyncpg

from ..dump import TABLES, DumpRow, normalise, select_sql
from .group_commit import EVENT_LOCK


async def pg_snapshot(
    pool: asyncpg.Pool, tables: Sequence[str], batch_size: int
) -> AsyncIterator[tuple[str, list[DumpRow]]]:
    """``(table, rows)`` batches of ``tables`` from one REPEATABLE READ transaction, read
    through server-side cursors (constant memory)."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        for table in tables:
            cursor = await conn.cursor(select_sql(table))
            while rows := await cursor.fetch(batch_size):
                yield table, [normalise(table, r) for r in rows]


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
