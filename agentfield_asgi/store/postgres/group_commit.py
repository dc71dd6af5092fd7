"""Planning a PostgreSQL group commit: many units, a few round trips.

Under the writer's advisory lock (which every writer of the database takes), the
group reads the current rows of every key it touches in one query, is decided in
memory (:mod:`.planning`), and writes the final state of every touched key (vector rows
included) plus all event rows, in unit order, in one statement (:data:`WRITE_SQL`).
Values stay JSON bytes from request to JSONB.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from ...codec import dumps
from ...errors import VectorsUnavailable
from .. import semantics
from ..base import (
    ClearOp,
    Event,
    Record,
    VectorDeleteOp,
    VectorSetOp,
    WriteOp,
)
from ..planning import POINT_OPS, Key, Plan, PlannedEvent, state_of, touched_keys
from ..sql import EVENT_COLS, RECORD_COLS, event_from_row, record_from_row
from .feed import CHANNEL
from .vectors import PostgresVectors, batchable, group_write_ctes

EVENT_LOCK = 0x61666576  # "afev": held by every writer from its first statement to COMMIT
BEGIN_LOCKED = f"BEGIN; SELECT pg_advisory_xact_lock({EVENT_LOCK})"

PREFETCH_SQL = f"""
SELECT {RECORD_COLS} FROM memory
WHERE (scope, scope_id, key) IN (SELECT * FROM unnest($1::text[], $2::text[], $3::text[]))
UNION ALL
SELECT {RECORD_COLS} FROM memory
WHERE (scope, scope_id) IN (SELECT * FROM unnest($4::text[], $5::text[]))
"""
"""Current rows of the keys a batch touches ($1-$3) and of the scopes it clears ($4-$5)."""


def write_sql(vector_ctes: str = "") -> str:
    """:data:`WRITE_SQL`, with ``vector_ctes`` (a group's vector writes) joined to it."""
    return f"""
WITH {vector_ctes + ", " if vector_ctes else ""}upserted AS (
    INSERT INTO memory ({RECORD_COLS})
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[], $5::bigint[],
                         $6::bigint[], $7::bigint[], $8::jsonb[], $9::bigint[])
    ON CONFLICT (scope, scope_id, key) DO UPDATE SET
        value = excluded.value, created_us = excluded.created_us,
        updated_us = excluded.updated_us, version = excluded.version,
        metadata = excluded.metadata, expires_us = excluded.expires_us
), deleted AS (
    DELETE FROM memory AS m
    USING unnest($10::text[], $11::text[], $12::text[]) AS d(scope, scope_id, key)
    WHERE m.scope = d.scope AND m.scope_id = d.scope_id AND m.key = d.key
), logged AS (
    INSERT INTO events (ts_us, scope, scope_id, key, action, data, previous, metadata)
    SELECT ts_us, scope, scope_id, key, action, data, previous, metadata
    FROM unnest($13::bigint[], $14::text[], $15::text[], $16::text[], $17::text[],
                $18::jsonb[], $19::jsonb[], $20::jsonb[])
         WITH ORDINALITY AS e(ts_us, scope, scope_id, key, action, data, previous, metadata, n)
    ORDER BY n
    RETURNING {EVENT_COLS}
)
SELECT {EVENT_COLS},
       (SELECT CASE WHEN $21::bool THEN pg_notify('{CHANNEL}', max(id)::text) END FROM logged)
FROM logged ORDER BY id
"""


WRITE_SQL = write_sql()
"""The batch's final rows ($1-$9), deleted keys ($10-$12) and events in order ($13-$20),
in one statement. Returns the events as stored (so the feed need not read them back),
and NOTIFYs the highest id when $21 is true."""
WRITE_PARAMS = 21


@functools.cache
def _required(vectors: PostgresVectors | None) -> PostgresVectors:
    if vectors is None:
        raise VectorsUnavailable()
    return vectors


def _write_sql_with_vectors(with_vec: bool) -> str:
    return write_sql(group_write_ctes(with_vec, first=WRITE_PARAMS + 1))


NOTIFY_SQL = "SELECT pg_notify($1, $2)"

LOCK_AND_READ_SQL = (
    f"SELECT {RECORD_COLS} FROM agentfield_lock_and_read($1, $2::text[], $3::text[], $4::text[])"
)
"""Take the writer lock for the session ($1) and read the rows of the keys ($2-$4), in one
round trip (a function from schema migration 2). Released with :data:`UNLOCK_SQL`."""
UNLOCK_SQL = "SELECT pg_advisory_unlock($1)"

_DB_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)


@dataclass(slots=True, eq=False)
class Unit:
    """One caller's ops: all applied or none."""

    ops: Sequence[WriteOp]
    future: asyncio.Future[Any]
    results: list[Any] | None = None
    error: BaseException | None = None
    touched_db: bool = False
    """It ran SQL while being planned (vector ops), so undoing it needs a savepoint."""
    submitted: float = 0.0
    """``time.perf_counter()`` when it was queued (for the write-group metrics)."""

    def reset(self) -> None:
        self.results, self.error, self.touched_db = None, None, False


def _meta(metadata: dict[str, Any] | None) -> bytes | None:
    return dumps(metadata) if metadata else None


class Batch(Plan):
    """A :class:`~.planning.Plan` that also clears scopes and runs vector ops (which
    need the connection), written by :data:`WRITE_SQL`."""

    __slots__ = ("conn", "vector_group", "vectors")

    def __init__(
        self,
        state: dict[Key, Record | None],
        vectors: PostgresVectors | None = None,
        conn: asyncpg.Connection | None = None,
        vector_group: Any = None,
    ) -> None:
        super().__init__(state)
        self.vectors = vectors
        self.conn = conn
        self.vector_group = vector_group
        """Vector ops decided in memory and written in bulk (vectors.VectorGroup), or
        None: each vector op runs its own statement during planning."""

    @staticmethod
    def lockable(units: Sequence[Unit], vectors: PostgresVectors | None) -> bool:
        """Whether :meth:`lock_and_read` can take the group: sets, incrs and deletes of
        keys, and vector sets and deletes that can be decided in memory."""
        ops = [op for unit in units for op in unit.ops]
        kinds: tuple[type, ...] = (*POINT_OPS, VectorSetOp, VectorDeleteOp)
        if vectors is None:  # vector ops fail (501) in _commit_together
            kinds = POINT_OPS
        return all(isinstance(op, kinds) for op in ops) and batchable(ops)

    @classmethod
    async def lock_and_read(
        cls, conn: asyncpg.Connection, units: Sequence[Unit], vectors: PostgresVectors | None = None
    ) -> Batch:
        """Take the writer lock (session-level) and read every row the units touch: one
        round trip for keys or for vectors, two for both."""
        keys = touched_keys(unit.ops for unit in units)
        vector_ops = _vector_ops(op for unit in units for op in unit.ops)
        state: dict[Key, Record | None] = {}
        if keys or not vector_ops:
            rows = await conn.fetch(
                LOCK_AND_READ_SQL,
                EVENT_LOCK,
                [k[0] for k in keys],
                [k[1] for k in keys],
                [k[2] for k in keys],
            )
            state = state_of(map(record_from_row, rows))
        group = None
        if vector_ops:
            lock = None if keys else EVENT_LOCK
            group = await _required(vectors).read_group(conn, vector_ops, lock)
        return cls(state, vectors=vectors, conn=conn, vector_group=group)

    @classmethod
    async def prefetch(
        cls, conn: asyncpg.Connection, units: Sequence[Unit], vectors: PostgresVectors | None = None
    ) -> Batch:
        all_ops = [op for unit in units for op in unit.ops]
        points = touched_keys([all_ops])
        cleared = list({(op.scope, op.scope_id): None for op in all_ops if isinstance(op, ClearOp)})
        vector_ops = _vector_ops(all_ops)
        vector_group = None
        if vectors is not None and vector_ops and batchable(all_ops):
            vector_group = await vectors.read_group(conn, vector_ops)
        state: dict[Key, Record | None] = {}
        if points or cleared:
            rows = await conn.fetch(
                PREFETCH_SQL,
                [k[0] for k in points],
                [k[1] for k in points],
                [k[2] for k in points],
                [c[0] for c in cleared],
                [c[1] for c in cleared],
            )
            state = state_of(map(record_from_row, rows))
        return cls(state, vectors=vectors, conn=conn, vector_group=vector_group)

    async def add(self, unit: Unit, ts: int) -> None:
        """Plan ``unit``; on success its changes join the batch, else only ``unit.error`` is set."""
        changes: dict[Key, Record | None] = {}
        events: list[PlannedEvent] = []
        # A failing op changes nothing; undo only what a unit's earlier ops planned.
        saved = (
            self.vector_group.copy()
            if self.vector_group is not None and len(unit.ops) > 1
            else None
        )
        try:
            results = [await self._apply(op, ts, changes, events, unit) for op in unit.ops]
        except _DB_ERRORS:
            raise
        except Exception as exc:  # the unit's own failure (VersionConflict, NotANumber...)
            unit.error = exc
            if saved is not None:
                self.vector_group = saved
            return
        self.merge(changes, events)
        unit.results = results

    async def _apply(
        self,
        op: WriteOp,
        ts: int,
        changes: dict[Key, Record | None],
        events: list[PlannedEvent],
        unit: Unit,
    ) -> Any:
        if isinstance(op, POINT_OPS):
            return self.point(op, ts, changes, events)
        if isinstance(op, ClearOp):
            return await self._clear(op, ts, changes, events, unit)
        if isinstance(op, VectorSetOp | VectorDeleteOp):
            vectors = self._require_vectors()
            if self.vector_group is not None:
                return vectors.plan(self.vector_group, op, ts, events, _log)
            unit.touched_db = True
            return await vectors.apply_in_tx(self.conn, op, ts, events, _log)
        raise TypeError(f"unknown op {op!r}")

    async def _clear(
        self,
        op: ClearOp,
        ts: int,
        changes: dict[Key, Record | None],
        events: list[PlannedEvent],
        unit: Unit,
    ) -> int:
        keys = sorted(
            k
            for k in (self.state.keys() | changes.keys())
            if k[0] == op.scope and k[1] == op.scope_id
        )
        count = 0
        for key in keys:
            record = self.current(key, changes)
            if record is None:
                continue
            changes[key] = None
            count += semantics.is_live(record, ts)
            meta = semantics.removal_metadata(op.event_metadata, record, ts)
            events.append((ts, *key, "delete", None, record.data_json, meta))
        if self.vectors is not None:
            unit.touched_db = True
            await self.vectors.clear_in_tx(self.conn, op, ts, events, _log)
        return count

    def _require_vectors(self) -> PostgresVectors:
        return _required(self.vectors)

    async def write(self, conn: asyncpg.Connection, notify: bool) -> list[Event]:
        """Write the batch, vector rows planned in memory included, in one statement;
        returns its events as stored."""
        if self.empty:  # every write logs an event: no event, nothing to write
            return []
        args = self.write_args(notify=notify)
        if self.vector_group is None:
            rows = await conn.fetch(WRITE_SQL, *args)
        else:
            vectors = self._require_vectors()
            args += vectors.group_write_args(self.vector_group)
            rows = await conn.fetch(_write_sql_with_vectors(vectors.with_vec), *args)
        return [event_from_row(row) for row in rows]

    def write_args(self, notify: bool) -> list[Any]:
        """Parameters of :data:`WRITE_SQL` for this batch."""
        rows, gone = self.rows()
        columns: list[list[Any]] = [
            [r.scope for r in rows],
            [r.scope_id for r in rows],
            [r.key for r in rows],
            [r.data_json for r in rows],
            [r.created_us for r in rows],
            [r.updated_us for r in rows],
            [r.version for r in rows],
            [_meta(r.metadata) for r in rows],
            [r.expires_us for r in rows],
            [k[0] for k in gone],
            [k[1] for k in gone],
            [k[2] for k in gone],
        ]
        columns += [list(c) for c in zip(*self.events, strict=True)] or [[]] * 8
        columns[-1] = [_meta(m) for m in columns[-1]]
        return [*columns, notify]


def _vector_ops(ops: Iterable[WriteOp]) -> list[VectorSetOp | VectorDeleteOp]:
    return [op for op in ops if isinstance(op, VectorSetOp | VectorDeleteOp)]


def _log(
    conn: Any,
    ts: int,
    scope: str,
    scope_id: str,
    key: str,
    action: str,
    data: bytes | None,
    previous: bytes | None,
    metadata: dict[str, Any],
    events: list[PlannedEvent],
) -> None:
    """The event logger handed to vector hooks (same shape as SQLite's ``log_event``): the row
    is written with the rest of the batch."""
    events.append((ts, scope, scope_id, key, action, data, previous, metadata))
