"""PostgreSQL upkeep: compacting the event log."""

from __future__ import annotations

import asyncpg

from ...codec import now_us
from .. import sql
from ..sql import POSTGRES


async def compact_events(
    conn: asyncpg.Connection, max_age_seconds: float | None, max_events: int | None
) -> int:
    """Delete events older than ``max_age_seconds`` or beyond the newest ``max_events``, in
    one transaction that also records how far the log was compacted; how many went."""
    async with conn.transaction():
        cutoff = 0
        if max_age_seconds is not None:
            oldest_kept = now_us() - int(max_age_seconds * 1_000_000)
            found = await conn.fetchval(POSTGRES.sql(sql.COMPACT_BY_AGE_SQL), oldest_kept)
            cutoff = max(cutoff, found or 0)
        if max_events is not None:
            found = await conn.fetchval(POSTGRES.sql(sql.COMPACT_BY_COUNT_SQL), max_events)
            cutoff = max(cutoff, found or 0)
        if cutoff <= 0:
            return 0
        status = await conn.execute(POSTGRES.sql(sql.COMPACT_DELETE_SQL), cutoff)
        await conn.execute(sql.compacted_through_upsert(POSTGRES), cutoff)
        return int(status.split()[-1])
