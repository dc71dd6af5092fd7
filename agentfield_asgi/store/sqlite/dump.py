"""SQLite: every stored row from one read transaction, and dumped rows loaded back."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Sequence

from ..dump import JSON_COLUMNS, TABLES, DumpRow, normalise, select_sql


async def sqlite_snapshot(
    conn: sqlite3.Connection, tables: Sequence[str], batch_size: int
) -> AsyncIterator[tuple[str, list[DumpRow]]]:
    """``(table, rows)`` batches of ``tables`` from one read transaction on ``conn`` (a
    connection of its own: in WAL mode its snapshot holds from the first read to the end)."""
    await asyncio.to_thread(conn.execute, "BEGIN")
    try:
        for table in tables:
            cursor = await asyncio.to_thread(conn.execute, select_sql(table))
            while rows := await asyncio.to_thread(cursor.fetchmany, batch_size):
                yield table, [normalise(table, r) for r in rows]
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
