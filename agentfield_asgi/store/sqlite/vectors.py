"""The embedded backend's vector part: rows in SQLite's ``vectors`` table, searched in a
:class:`~..vector_index.VectorIndex` held in memory.

:func:`write_vector_in_tx` and :func:`clear_vectors_in_tx` run inside the writer's
transaction (module functions: they need no index, so they run in the writer process
too); :class:`SQLiteVectors` is what the store holds on the event loop.
"""

from __future__ import annotations

import sqlite3

from ...codec import dumps
from ..base import ClearOp, Event, VectorDeleteOp, VectorRecord, VectorSetOp
from ..semantics import metadata_of, plan_vector
from ..vector_index import VectorIndex
from ..vector_scope import ScopeVectors
from ..vectors import (
    LOAD_CHUNK,
    InMemorySearch,
    LogEvent,
    encode_embedding,
    load_scope,
    log_cleared,
)

WHERE_KEY = "WHERE scope = ? AND scope_id = ? AND key = ?"


class SQLiteVectors(InMemorySearch):
    """Rows in SQLite, search in a :class:`VectorIndex` loaded per scope on first use."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.index = VectorIndex(self._load)
        self.mode = "exact (numpy, in memory)"

    async def _load(self, scope: str, scope_id: str) -> ScopeVectors | None:
        return await self.index.in_thread(self._read_scope, scope, scope_id)  # type: ignore[no-any-return]

    # Runs in a worker thread, on its own read-only connection.
    def _read_scope(self, scope: str, scope_id: str) -> ScopeVectors | None:
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout = 10000")
            conn.execute("BEGIN")  # one snapshot for the count and the rows
            where = (scope, scope_id)
            # The store keeps one dimension per scope; should rows of another ever exist,
            # the most common dimension is the scope's.
            found = conn.execute(
                "SELECT dim, COUNT(*) FROM vectors WHERE scope = ? AND scope_id = ? "
                "GROUP BY dim ORDER BY COUNT(*) DESC LIMIT 1",
                where,
            ).fetchone()
            if found is None:
                return None
            cursor = conn.execute(
                "SELECT key, embedding, metadata, created_us, updated_us FROM vectors "
                "WHERE scope = ? AND scope_id = ? AND dim = ?",
                (*where, found[0]),
            )
            return load_scope(found[0], found[1], iter(lambda: cursor.fetchmany(LOAD_CHUNK), []))
        finally:
            conn.close()


# Writer side: run inside the SQLite writer's transaction (in the writer process, too).
def write_vector_in_tx(
    conn: sqlite3.Connection,
    op: VectorSetOp | VectorDeleteOp,
    ts: int,
    events: list[Event],
    log: LogEvent,
) -> VectorRecord | bool:
    where = (op.scope, op.scope_id, op.key)
    row = conn.execute(
        f"SELECT dim, metadata, created_us FROM vectors {WHERE_KEY}", where
    ).fetchone()
    stored = (row[0], metadata_of(row[1]), row[2]) if row is not None else None
    other = None
    if isinstance(op, VectorSetOp):
        found = conn.execute(
            "SELECT dim FROM vectors WHERE scope = ? AND scope_id = ? AND key <> ? LIMIT 1",
            where,
        ).fetchone()
        other = found[0] if found is not None else None
    change = plan_vector(op, stored, other, ts)
    if change is None:
        return False
    if isinstance(op, VectorDeleteOp):
        conn.execute(f"DELETE FROM vectors {WHERE_KEY}", where)
    else:
        conn.execute(
            "INSERT OR REPLACE INTO vectors (scope, scope_id, key, dim, embedding, metadata, "
            "created_us, updated_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                *where,
                len(op.embedding),
                encode_embedding(op.embedding),
                dumps(op.metadata).decode() if op.metadata else None,
                change.created_us,
                ts,
            ),
        )
    log(conn, ts, *where, change.action, change.data, change.previous, change.metadata, events)
    return change.result


def clear_vectors_in_tx(
    conn: sqlite3.Connection, op: ClearOp, ts: int, events: list[Event], log: LogEvent
) -> int:
    rows = conn.execute(
        "SELECT key, dim, metadata FROM vectors WHERE scope = ? AND scope_id = ? ORDER BY key",
        (op.scope, op.scope_id),
    ).fetchall()
    if not rows:
        return 0
    conn.execute("DELETE FROM vectors WHERE scope = ? AND scope_id = ?", (op.scope, op.scope_id))
    return log_cleared(conn, op, ts, rows, events, log)
