"""Filling a database with N keys before a server starts, directly through the driver
(loading a million keys over HTTP would measure the loader, not the store)."""

from __future__ import annotations

import sqlite3

from ..codec import now_us
from ..settings import Settings
from ..store import open_store

BATCH = 50_000


async def create_schema(database_url: str) -> None:
    store = open_store(Settings(database_url=database_url))
    await store.open()
    await store.close()


def _rows(start: int, stop: int, scope_id: str, ts: int) -> list[tuple[object, ...]]:
    return [("global", scope_id, f"bench-{i}", '{"n":%d}' % i, None, ts, ts, 1, None) for i in range(start, stop)]


async def preload(database_url: str, count: int, *, scope_id: str = "global") -> None:
    """Ensure keys ``bench-0 .. bench-{count-1}`` exist in the global scope."""
    await create_schema(database_url)
    ts = now_us()
    if database_url.startswith("sqlite"):
        conn = sqlite3.connect(database_url.split(":///", 1)[1], isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        for start in range(0, count, BATCH):
            conn.execute("BEGIN")
            conn.executemany(
                "INSERT OR IGNORE INTO memory (scope, scope_id, key, value, metadata, created_us, "
                "updated_us, version, expires_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                _rows(start, min(count, start + BATCH), scope_id, ts),
            )
            conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        return
    import asyncpg

    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("CREATE TEMP TABLE preload (LIKE memory INCLUDING DEFAULTS)")
        for start in range(0, count, BATCH):
            await conn.copy_records_to_table(
                "preload",
                records=_rows(start, min(count, start + BATCH), scope_id, ts),
                columns=["scope", "scope_id", "key", "value", "metadata", "created_us", "updated_us",
                         "version", "expires_us"],
            )
        await conn.execute("INSERT INTO memory SELECT * FROM preload ON CONFLICT DO NOTHING")
        await conn.execute("ANALYZE memory")
    finally:
        await conn.close()
