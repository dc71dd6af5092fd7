"""PostgreSQL's vector part: what both modes write (:class:`PostgresVectors`), in one of
two modes chosen at open (``exact.py``, ``pgvector.py``):

* **pgvector** (the server has the ``vector`` extension): each row also holds a
  ``vec vector`` column; an HNSW index per dimension and metric (a partial index on
  ``vec::vector(dim)``, built in the background with ``CREATE INDEX CONCURRENTLY``,
  one builder at a time across instances) answers searches of large scopes, with
  ``hnsw.ef_search`` raised when the scope is a small share of the index. Small
  scopes, dimensions above pgvector's HNSW limit, answers that filtering left short,
  and the time before an index is ready use exact ``ORDER BY distance`` in SQL.
* **exact** (no pgvector): the embedded backend's in-memory index
  (:class:`~.vector_index.VectorIndex`), loaded per scope from the ``vectors`` table.
  Writes of this process update it after COMMIT; writes of other instances arrive
  as change events through the store's feed and are re-read before the next search.

Either way the row (float32 blob, dimension, metadata) and its change event are
written in the writer's transaction, under the writer lock every instance takes,
so the one-dimension-per-scope check cannot race. Reported scores are recomputed
in float64 from the stored blobs, as on SQLite.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import asyncpg
import numpy as np
import orjson

from ...codec import dumps
from ..base import ClearOp, VectorDeleteOp, VectorHit, VectorRecord, VectorSetOp
from ..semantics import metadata_of, plan_vector
from ..vector_index import StoredRow
from ..vectors import EMBEDDING_DTYPE, LogEvent, encode_embedding, log_cleared

if TYPE_CHECKING:
    from .store import PostgresStore

UPSERT_COLUMNS = "scope, scope_id, key, dim, embedding, metadata, created_us, updated_us"
DELETE_SQL = "DELETE FROM vectors WHERE scope = $1 AND scope_id = $2 AND key = $3"
CLEAR_SQL = "DELETE FROM vectors WHERE scope = $1 AND scope_id = $2 RETURNING key, dim, metadata"
ROW_COLUMNS = "key, dim, embedding, metadata, created_us, updated_us"
GROUP_READ_SQL = (
    "SELECT * FROM agentfield_lock_and_read_vectors("
    "$1::bigint, $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])"
)
"""Rows of the touched keys ($2-$4); up to two keys of each scope written into ($5-$6);
with a lock id ($1), the writer lock is taken first (a function from schema migration 3)."""


def _upsert_updates(with_vec: bool) -> str:
    """The SET list of a vector upsert's ON CONFLICT; a rewritten row is pending again."""
    updates = (
        "dim = excluded.dim, embedding = excluded.embedding, "
        "metadata = excluded.metadata, updated_us = excluded.updated_us"
    )
    return updates + (", vec = excluded.vec, gen = 0" if with_vec else "")


def group_write_ctes(with_vec: bool, first: int) -> str:
    """Two CTEs writing a :class:`VectorGroup` (see :func:`group_write_args`), numbered
    from parameter ``first``: they join the statement that writes the group's events."""
    p = [f"${n}" for n in range(first, first + 12)]
    columns = UPSERT_COLUMNS + (", vec, gen" if with_vec else "")
    updates = _upsert_updates(with_vec)
    return f"""vectors_upserted AS (
    INSERT INTO vectors ({columns})
    SELECT scope, scope_id, key, dim, embedding, metadata, created_us, updated_us
           {", vec::vector, 0" if with_vec else ""}
    FROM unnest({p[0]}::text[], {p[1]}::text[], {p[2]}::text[], {p[3]}::int[], {p[4]}::bytea[],
                {p[5]}::jsonb[], {p[6]}::bigint[], {p[7]}::bigint[], {p[8]}::text[])
         AS t(scope, scope_id, key, dim, embedding, metadata, created_us, updated_us, vec)
    ON CONFLICT (scope, scope_id, key) DO UPDATE SET {updates}
), vectors_deleted AS (
    DELETE FROM vectors AS v
    USING unnest({p[9]}::text[], {p[10]}::text[], {p[11]}::text[]) AS d(s, i, k)
    WHERE v.scope = d.s AND v.scope_id = d.i AND v.key = d.k
)"""


class VectorGroup:
    """A group's vector writes decided in memory (:meth:`PostgresVectors.plan`)."""

    __slots__ = ("rows", "scopes", "writes")

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str, str], tuple[int, dict[str, Any], int] | None] = {}
        """(dim, metadata, created_us) of each touched key as the group leaves it."""
        self.scopes: dict[tuple[str, str], dict[str, int]] = {}
        """Up to two keys of each scope set into, with their dimension (all keys of a scope
        share one): whether another key's dimension forbids a set."""
        self.writes: dict[tuple[str, str, str], tuple[Any, int, int] | None] = {}
        """(op, created_us, updated_us) to upsert, or None to delete."""

    def copy(self) -> VectorGroup:
        other = VectorGroup()
        other.rows = dict(self.rows)
        other.scopes = {k: dict(v) for k, v in self.scopes.items()}
        other.writes = dict(self.writes)
        return other


def batchable(ops: Sequence[Any]) -> bool:
    """Vector ops a group may plan in memory: no clear, and no scope both set into and
    deleted from (a delete could empty a scope and free its dimension, which the
    two-key sample cannot tell)."""
    set_scopes, deleted_scopes = set(), set()
    for op in ops:
        if isinstance(op, ClearOp):
            return False
        if isinstance(op, VectorSetOp):
            set_scopes.add((op.scope, op.scope_id))
        elif isinstance(op, VectorDeleteOp):
            deleted_scopes.add((op.scope, op.scope_id))
    return not (set_scopes & deleted_scopes)


def vector_literal(embedding: np.ndarray) -> str:
    """pgvector's text form ``[x,y,...]`` (shortest float32 repr of each component)."""
    return orjson.dumps(
        np.asarray(embedding, dtype=np.float32), option=orjson.OPT_SERIALIZE_NUMPY
    ).decode()


def stored_row(row: Sequence[Any]) -> StoredRow:
    """A ``ROW_COLUMNS`` row as an index holds it (float32 embedding, decoded metadata)."""
    key, dim, blob, metadata, created, updated = row
    return (
        key,
        dim,
        np.frombuffer(blob, dtype=EMBEDDING_DTYPE).astype(np.float32),
        metadata_of(metadata),
        created,
        updated,
    )


class PostgresVectors:
    """Writes shared by both modes: the row, the dimension check, the change events.
    A mode adds search (a :class:`~..base.VectorStore`)."""

    with_vec = False
    mode: str

    def __init__(self, store: PostgresStore) -> None:
        self.store = store

    def apply_committed(self, ops: Sequence[Any], results: Sequence[Any]) -> None:
        """Nothing held in memory by default."""

    def forget(self) -> None:
        """Nothing held in memory by default."""

    async def search(
        self,
        scope: str,
        scope_id: str,
        query: Any,
        *,
        top_k: int,
        filters: dict[str, Any] | None,
        metric: str,
    ) -> list[VectorHit]:
        raise NotImplementedError

    async def apply_in_tx(
        self,
        conn: asyncpg.Connection,
        op: VectorSetOp | VectorDeleteOp,
        ts: int,
        events: list[Any],
        log_event: LogEvent,
    ) -> VectorRecord | bool:
        where = (op.scope, op.scope_id, op.key)
        if isinstance(op, VectorDeleteOp):
            row = await conn.fetchrow(DELETE_SQL + " RETURNING dim, metadata", *where)
            change = plan_vector(op, (row[0], metadata_of(row[1]), None) if row else None, None, ts)
        else:
            params = [
                *where,
                len(op.embedding),
                encode_embedding(op.embedding),
                dumps(op.metadata) if op.metadata else None,
                ts,
                *self._extra(op),
            ]
            # The upsert writes nothing when another key's dimension differs.
            other_dim, dim, meta, created = await conn.fetchrow(self._set_sql, *params)
            stored = (dim, metadata_of(meta), created) if dim is not None else None
            change = plan_vector(op, stored, other_dim, ts)
        if change is None:
            return False
        log_event(
            conn, ts, *where, change.action, change.data, change.previous, change.metadata, events
        )
        return change.result

    @functools.cached_property
    def _set_sql(self) -> str:
        """One round trip: another key's dimension (the scope's), this key's current row,
        and the upsert, which writes nothing when the dimensions differ."""
        columns, values = UPSERT_COLUMNS, "$1, $2, $3, $4, $5, $6, COALESCE(p.created_us, $7), $7"
        if self.with_vec:
            columns += ", vec, gen"
            values += ", $8::text::vector, 0"
        updates = _upsert_updates(self.with_vec)
        return f"""
WITH other AS (SELECT dim FROM vectors WHERE scope = $1 AND scope_id = $2 AND key <> $3 LIMIT 1),
prev AS (SELECT dim, metadata, created_us FROM vectors
         WHERE scope = $1 AND scope_id = $2 AND key = $3),
written AS (
    INSERT INTO vectors ({columns})
    SELECT {values} FROM (SELECT 1) AS one LEFT JOIN prev AS p ON true
    WHERE NOT EXISTS (SELECT 1 FROM other WHERE other.dim <> $4)
    ON CONFLICT (scope, scope_id, key) DO UPDATE SET {updates}
)
SELECT (SELECT dim FROM other), (SELECT dim FROM prev), (SELECT metadata FROM prev),
       (SELECT created_us FROM prev)
"""

    # -- a group's vector writes in bulk (see group_commit.Batch): two round trips a group
    async def read_group(
        self,
        conn: asyncpg.Connection,
        ops: Sequence[VectorSetOp | VectorDeleteOp],
        lock: int | None = None,
    ) -> VectorGroup:
        """The current rows of the keys ``ops`` touch, and up to two keys (with their
        dimension) of each scope they set into: enough to check dimensions in memory.
        With ``lock``, the session's writer lock is taken first, in the same call."""
        keys = list(dict.fromkeys((op.scope, op.scope_id, op.key) for op in ops))
        scopes = list(
            dict.fromkeys((op.scope, op.scope_id) for op in ops if isinstance(op, VectorSetOp))
        )
        rows = await conn.fetch(
            GROUP_READ_SQL,
            lock,
            [k[0] for k in keys],
            [k[1] for k in keys],
            [k[2] for k in keys],
            [s[0] for s in scopes],
            [s[1] for s in scopes],
        )
        group = VectorGroup()
        for kind, scope, scope_id, key, dim, metadata, created in rows:
            if kind == "k":
                group.rows[(scope, scope_id, key)] = (dim, metadata_of(metadata), created)
            else:
                group.scopes.setdefault((scope, scope_id), {})[key] = dim
        return group

    def plan(
        self,
        group: VectorGroup,
        op: VectorSetOp | VectorDeleteOp,
        ts: int,
        events: list[Any],
        log_event: LogEvent,
    ) -> VectorRecord | bool:
        """:meth:`apply_in_tx` decided against ``group`` instead of the database."""
        where = (op.scope, op.scope_id, op.key)
        sample = group.scopes.setdefault((op.scope, op.scope_id), {})
        other = None
        if isinstance(op, VectorSetOp):
            other = next((d for k, d in sample.items() if k != op.key), None)
        change = plan_vector(op, group.rows.get(where), other, ts)
        if change is None:
            return False
        if isinstance(op, VectorDeleteOp):
            group.rows[where] = None
            group.writes[where] = None
        else:
            dim = len(op.embedding)
            group.rows[where] = (dim, op.metadata, change.created_us)
            group.writes[where] = (op, change.created_us, ts)
            if len(sample) < 2 or op.key in sample:
                sample[op.key] = dim
        log_event(
            None, ts, *where, change.action, change.data, change.previous, change.metadata, events
        )
        return change.result

    def group_write_args(self, group: VectorGroup) -> list[list[Any]]:
        """Parameters of :func:`group_write_ctes` for what :meth:`plan` decided."""
        sets = [(k, w) for k, w in group.writes.items() if w is not None]
        gone = [k for k, w in group.writes.items() if w is None]
        return [
            [k[0] for k, _ in sets],
            [k[1] for k, _ in sets],
            [k[2] for k, _ in sets],
            [len(w[0].embedding) for _, w in sets],
            [encode_embedding(w[0].embedding) for _, w in sets],
            [dumps(w[0].metadata) if w[0].metadata else None for _, w in sets],
            [w[1] for _, w in sets],
            [w[2] for _, w in sets],
            [vector_literal(w[0].embedding) if self.with_vec else None for _, w in sets],
            [k[0] for k in gone],
            [k[1] for k in gone],
            [k[2] for k in gone],
        ]

    def _extra(self, op: VectorSetOp) -> list[Any]:
        return [vector_literal(op.embedding)] if self.with_vec else []

    async def clear_in_tx(
        self, conn: asyncpg.Connection, op: ClearOp, ts: int, events: list[Any], log_event: LogEvent
    ) -> int:
        rows = sorted(await conn.fetch(CLEAR_SQL, op.scope, op.scope_id), key=lambda r: r[0])
        return log_cleared(conn, op, ts, rows, events, log_event)

    def close(self) -> None:
        pass
