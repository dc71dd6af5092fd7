"""PostgreSQL's vector part, in one of two modes chosen at open:

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

import asyncio
import contextlib
import functools
import logging
import math
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import asyncpg
import numpy as np
import orjson

from ...codec import dumps
from ..base import ClearOp, Event, VectorDeleteOp, VectorHit, VectorRecord, VectorSetOp
from ..vector_index import (
    MIN_CAPACITY,
    ScopeVectors,
    StoredRow,
    VectorIndex,
    dimension_mismatch,
    exact_distances,
    score_from_distance,
)
from ..vectors import (
    EMBEDDING_DTYPE,
    EVENT_KIND,
    LOAD_CHUNK,
    InMemorySearch,
    LogEvent,
    encode_embedding,
    event_metadata,
    event_payload,
    extend_from_rows,
    log_cleared,
    metadata_of,
)

log = logging.getLogger("agentfield_asgi.store.vectors")

HNSW_MAX_DIMENSION = 2000  # pgvector's HNSW limit for the vector type
HNSW_MIN_ROWS = 2000  # below this an exact scan of the scope is as fast, and exact
COUNT_TTL_SECONDS = 10.0
GENERATION_TTL_SECONDS = 2.0
SETUP_LOCK = 0x61667663  # "afvc": schema changes for pgvector, one instance at a time
INDEXER_LOCK = 0x61667669  # "afvi": held by the one instance that builds HNSW indexes
INDEXER_RETRY_SECONDS = 5.0
DIM_SCAN_SECONDS = 30.0
IDLE_SECONDS = 2.0  # no vector write for this long: index what is pending
DEMAND_SECONDS = 60.0  # a search of a dimension this recent makes its index worth building now
STEP_SECONDS = 1.0  # the indexer looks at most this often (its counts cost CPU the writes need)
REBUILD_MIN_ROWS = 10_000  # pending rows worth a new generation rather than row-by-row upkeep
FLIP_BATCH = 256
OPERATORS = {
    "cosine": ("vector_cosine_ops", "<=>"),
    "dot": ("vector_ip_ops", "<#>"),
    "l2": ("vector_l2_ops", "<->"),
}

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
    """A group's vector writes decided in memory (:meth:`_PostgresVectorRows.plan`)."""

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


def _stored(row: Sequence[Any]) -> StoredRow:
    key, dim, blob, metadata, created, updated = row
    return (
        key,
        dim,
        np.frombuffer(blob, dtype=EMBEDDING_DTYPE).astype(np.float32),
        metadata_of(metadata),
        created,
        updated,
    )


async def detect_pgvector(store: Any) -> tuple[str | None, str]:
    """``(version, why)``: the installed pgvector version (creating the extension when the
    server offers it and we may), or None with the reason exact search is used."""

    async def work(conn: asyncpg.Connection) -> tuple[str | None, str]:
        installed = await conn.fetchval(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
        )
        if installed:
            return installed, "extension installed"
        available = await conn.fetchval(
            "SELECT default_version FROM pg_available_extensions WHERE name = 'vector'"
        )
        if not available:
            return None, "the server has no pgvector extension"
        try:
            async with conn.transaction():
                await conn.execute(f"SELECT pg_advisory_xact_lock({SETUP_LOCK})")
                await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except asyncpg.PostgresError as exc:
            return None, f"cannot create the pgvector extension: {exc}"
        return await conn.fetchval(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
        ), "extension created"

    return await store._call(work)  # type: ignore[no-any-return]


class _PostgresVectorRows:
    """Writes shared by both modes: the row, the dimension check, the change events."""

    with_vec = False

    def __init__(self, store: Any) -> None:
        self.store = store

    async def apply_in_tx(
        self,
        conn: asyncpg.Connection,
        op: VectorSetOp | VectorDeleteOp,
        ts: int,
        events: list[Any],
        log_event: LogEvent,
    ) -> VectorRecord | bool:
        where = (op.scope, op.scope_id, op.key)
        meta = event_metadata(op.event_metadata)
        if isinstance(op, VectorDeleteOp):
            row = await conn.fetchrow(DELETE_SQL + " RETURNING dim, metadata", *where)
            if row is None:
                return False
            log_event(
                conn,
                ts,
                *where,
                "delete",
                None,
                event_payload(row[0], metadata_of(row[1])),
                meta,
                events,
            )
            return True
        dim = len(op.embedding)
        params = [
            *where,
            dim,
            encode_embedding(op.embedding),
            dumps(op.metadata) if op.metadata else None,
            ts,
            *self._extra(op),
        ]
        other_dim, prev_dim, prev_meta, prev_created = await conn.fetchrow(self._set_sql, *params)
        if other_dim is not None and other_dim != dim:  # nothing was written
            raise dimension_mismatch(op.scope, op.scope_id, other_dim, dim)
        created = prev_created if prev_created is not None else ts
        previous = event_payload(prev_dim, metadata_of(prev_meta)) if prev_dim is not None else None
        log_event(conn, ts, *where, "set", event_payload(dim, op.metadata), previous, meta, events)
        return VectorRecord(op.scope, op.scope_id, op.key, op.metadata, created, ts)

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

    # -- a group's vector writes in bulk (see pg_batch.Batch): two round trips a group
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
        meta = event_metadata(op.event_metadata)
        current = group.rows.get(where)
        if isinstance(op, VectorDeleteOp):
            if current is None:
                return False
            group.rows[where] = None
            group.writes[where] = None
            removed = event_payload(current[0], current[1])
            log_event(None, ts, *where, "delete", None, removed, meta, events)
            return True
        dim = len(op.embedding)
        sample = group.scopes.setdefault((op.scope, op.scope_id), {})
        other = next((d for k, d in sample.items() if k != op.key), None)
        if other is not None and other != dim:
            raise dimension_mismatch(op.scope, op.scope_id, other, dim)
        created = current[2] if current is not None else ts
        group.rows[where] = (dim, op.metadata, created)
        group.writes[where] = (op, created, ts)
        if len(sample) < 2 or op.key in sample:
            sample[op.key] = dim
        previous = event_payload(current[0], current[1]) if current is not None else None
        log_event(None, ts, *where, "set", event_payload(dim, op.metadata), previous, meta, events)
        return VectorRecord(op.scope, op.scope_id, op.key, op.metadata, created, ts)

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


class PostgresExactVectors(InMemorySearch, _PostgresVectorRows):
    """No pgvector: exact search in memory, kept in step with every instance's writes."""

    def __init__(self, store: Any, reason: str) -> None:
        super().__init__(store)
        self.index = VectorIndex(self._load, refresher=self._reread)
        self.mode = f"exact (numpy, in memory; {reason})"
        self._own_sets: dict[tuple[str, str, str], int] = {}
        self._own_deletes: Counter[tuple[str, str, str]] = Counter()
        self._unwatch = store.watch(self._on_events)

    def apply_committed(self, ops: Sequence[Any], results: Sequence[Any]) -> None:
        super().apply_committed(ops, results)
        if len(self._own_sets) > 100_000:  # the feed is behind or down: forget, re-read instead
            self._own_sets.clear()
            self._own_deletes.clear()
        for op, result in zip(ops, results, strict=False):
            if not self.index.is_held(op.scope, op.scope_id):
                continue
            if isinstance(op, VectorSetOp) and isinstance(result, VectorRecord):
                self._own_sets[(op.scope, op.scope_id, op.key)] = result.updated_us
            elif isinstance(op, VectorDeleteOp) and result:
                self._own_deletes[(op.scope, op.scope_id, op.key)] += 1

    def _on_events(self, events: list[Event]) -> None:
        """Vector changes from the feed: this process's are already applied; other
        instances' are re-read before the scope's next search."""
        for event in events:
            if event.metadata.get("kind") != EVENT_KIND or not self.index.is_held(
                event.scope, event.scope_id
            ):
                continue
            ref = (event.scope, event.scope_id, event.key)
            if event.action == "set" and self._own_sets.get(ref) == event.ts_us:
                del self._own_sets[ref]
            elif event.action == "delete" and self._own_deletes[ref] > 0:
                self._own_deletes[ref] -= 1
            else:
                self.index.mark_changed(*ref)

    async def _load(self, scope: str, scope_id: str) -> ScopeVectors | None:
        async def work(conn: asyncpg.Connection) -> ScopeVectors | None:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                found = await conn.fetchrow(
                    "SELECT dim, count(*) FROM vectors WHERE scope = $1 AND scope_id = $2 "
                    "GROUP BY dim ORDER BY count(*) DESC LIMIT 1",
                    scope,
                    scope_id,
                )
                if found is None:
                    return None
                dim, count = found
                vectors = ScopeVectors(dim, count + max(MIN_CAPACITY, count // 8))
                cursor = conn.cursor(
                    "SELECT key, embedding, metadata, created_us, updated_us FROM vectors "
                    "WHERE scope = $1 AND scope_id = $2 AND dim = $3",
                    scope,
                    scope_id,
                    dim,
                    prefetch=LOAD_CHUNK,
                )
                chunk: list[Any] = []
                async for row in cursor:
                    chunk.append(row)
                    if len(chunk) == LOAD_CHUNK:
                        await self.index.in_thread(extend_from_rows, vectors, chunk)
                        chunk = []
                if chunk:
                    await self.index.in_thread(extend_from_rows, vectors, chunk)
                return vectors

        return await self.store._call(work)  # type: ignore[no-any-return]

    async def _reread(self, scope: str, scope_id: str, keys: list[str]) -> list[StoredRow]:
        rows = await self.store._rows(
            f"SELECT {ROW_COLUMNS} FROM vectors "
            "WHERE scope = $1 AND scope_id = $2 AND key = ANY($3::text[])",
            [scope, scope_id, keys],
        )
        return [_stored(r) for r in rows]

    def close(self) -> None:
        self._unwatch()
        super().close()


class PgvectorVectors(_PostgresVectorRows):
    """pgvector: rows carry ``vec``; generations of HNSW indexes per (dimension, metric).

    A write stores ``vec`` with ``gen = 0`` (pending): it never waits for HNSW upkeep,
    the costly part of an insert (measured here: 460 inserts/s with the index, 3,080
    without). One indexer per database (an advisory lock picks it) indexes pending rows
    in the background (see :func:`indexing_action`): in bulk, as a new generation
    (``CREATE INDEX CONCURRENTLY ... WHERE gen BETWEEN 1 AND g``, an order of magnitude
    cheaper per row), then dropping the old one; or, for a few rows once writes pause,
    into the current one. A search asks the newest valid generation (HNSW) for the
    indexed rows and scans the pending rows of the scope exactly, and merges both.
    """

    with_vec = True

    def __init__(self, store: Any, version: str, metric: str) -> None:
        super().__init__(store)
        self.metric = metric
        self.opclass, self.operator = OPERATORS[metric]
        self.mode = (
            f"pgvector {version}: HNSW ({self.opclass}) for scopes of {HNSW_MIN_ROWS}+ vectors "
            "(new vectors exact until indexed), exact below"
        )
        self._dims: set[int] = set()
        self._generations: dict[int, tuple[float, int]] = {}  # dim -> (checked at, valid gen)
        self._counts: dict[tuple[str, str], tuple[float, int]] = {}
        self._table_rows: tuple[float, float] = (0.0, 0.0)
        self._wake = asyncio.Event()
        self._last_write = 0.0  # this instance's last vector write
        self._searched: dict[int, float] = {}  # dim -> this instance's last search of it
        self._pending: dict[int, int] = {}  # dim -> pending rows at the indexer's last look
        self._indexer: asyncio.Task[None] | None = None

    async def prepare(self) -> None:
        """Add the ``vec`` and ``gen`` columns (filling ``vec`` for rows written without
        pgvector), then start the indexer."""

        async def work(conn: asyncpg.Connection) -> None:
            async with conn.transaction():
                await conn.execute(f"SELECT pg_advisory_xact_lock({SETUP_LOCK})")
                ready = await conn.fetchval(
                    "SELECT count(*) = 2 FROM pg_indexes WHERE tablename = 'vectors' "
                    "AND indexname IN ('vectors_unindexed', 'vectors_generation')"
                )
                if not ready:  # first start with pgvector: DDL takes a table lock, once
                    await conn.execute(
                        "ALTER TABLE vectors ADD COLUMN IF NOT EXISTS vec vector, "
                        "ADD COLUMN IF NOT EXISTS gen integer NOT NULL DEFAULT 0"
                    )
                    # A search scans a scope's rows outside the valid generation exactly:
                    # new rows (gen 0), and rows of a generation being built (gen > valid).
                    await conn.execute(
                        "CREATE INDEX IF NOT EXISTS vectors_unindexed "
                        "ON vectors (scope, scope_id) WHERE gen = 0"
                    )
                    await conn.execute(
                        "CREATE INDEX IF NOT EXISTS vectors_generation "
                        "ON vectors (scope, scope_id, gen) WHERE gen > 0"
                    )
                missing = await conn.fetch(
                    "SELECT scope, scope_id, key, embedding FROM vectors WHERE vec IS NULL"
                )
                if missing:
                    log.info("filling pgvector column for %d stored vectors", len(missing))
                    await conn.executemany(
                        "UPDATE vectors SET vec = $4::text::vector, gen = 0 "
                        "WHERE scope = $1 AND scope_id = $2 AND key = $3",
                        [
                            (s, i, k, vector_literal(np.frombuffer(b, dtype=EMBEDDING_DTYPE)))
                            for s, i, k, b in missing
                        ],
                    )

        await self.store._call(work)
        self._indexer = asyncio.get_running_loop().create_task(self._index_forever())

    # ------------------------------------------------------------ event loop
    def apply_committed(self, ops: Sequence[Any], results: Sequence[Any]) -> None:
        for op, result in zip(ops, results, strict=False):
            if isinstance(op, VectorSetOp) and isinstance(result, VectorRecord):
                self._dims.add(len(op.embedding))
                self._last_write = time.monotonic()
                self._wake.set()
            elif isinstance(op, ClearOp | VectorDeleteOp):
                self._counts.pop((op.scope, op.scope_id), None)

    # ------------------------------------------------------------ indexer
    def _index_name(self, dim: int, gen: int) -> str:
        return f"vectors_hnsw_{self.metric}_{dim}_g{gen}"

    async def _valid_generation(
        self, conn: asyncpg.Connection, dim: int, fresh: bool = False
    ) -> int:
        """The newest generation with a valid HNSW index for ``dim`` (0: none)."""
        now = time.monotonic()
        cached = self._generations.get(dim)
        if not fresh and cached is not None and now - cached[0] < GENERATION_TTL_SECONDS:
            return cached[1]
        names = await conn.fetch(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE i.indisvalid AND c.relname LIKE $1",
            f"vectors_hnsw_{self.metric}_{dim}_g%",
        )
        gens = [int(n[0].rsplit("_g", 1)[1]) for n in names if n[0].rsplit("_g", 1)[1].isdigit()]
        gen = max(gens, default=0)
        self._generations[dim] = (now, gen)
        return gen

    async def _index_forever(self) -> None:
        """Be the database's indexer when no other instance is, and index pending rows."""
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self.store._dsn)
                while True:  # one indexer per database: wait until no other instance is it
                    if await conn.fetchval("SELECT pg_try_advisory_lock($1)", INDEXER_LOCK):
                        break
                    await asyncio.sleep(INDEXER_RETRY_SECONDS)
                scanned = 0.0
                while True:
                    if time.monotonic() - scanned > DIM_SCAN_SECONDS:  # other instances' dims
                        rows = await conn.fetch("SELECT DISTINCT dim FROM vectors WHERE gen = 0")
                        self._dims.update(r[0] for r in rows)
                        scanned = time.monotonic()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), STEP_SECONDS)
                    self._wake.clear()
                    busy = False
                    for dim in sorted(self._dims):
                        if dim <= HNSW_MAX_DIMENSION:
                            busy |= await self._index_step(conn, dim)
                    if not busy:  # nothing done: look again after a pause, not per write
                        await asyncio.sleep(STEP_SECONDS)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("vector indexer: %s; retrying", exc)
                await asyncio.sleep(INDEXER_RETRY_SECONDS)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()

    async def _index_step(self, conn: asyncpg.Connection, dim: int) -> bool:
        """Take the indexing action due for ``dim``; True when it did something."""
        now = time.monotonic()
        wanted = now - self._searched.get(dim, -math.inf) < DEMAND_SECONDS
        if not wanted and now - self._last_write < IDLE_SECONDS:
            return False  # a load no one searches yet: skip even the counts until it pauses
        pending = await conn.fetchval(
            "SELECT count(*) FROM vectors WHERE gen = 0 AND dim = $1", dim
        )
        # Growth since the last look is another instance's writes (ours set _last_write).
        grew = pending > self._pending.get(dim, pending)
        self._pending[dim] = pending
        if not pending:
            return False
        gen = await self._valid_generation(conn, dim, fresh=True)
        indexed = 0
        if gen:
            indexed = await conn.fetchval(
                "SELECT count(*) FROM vectors WHERE dim = $1 AND gen BETWEEN 1 AND $2", dim, gen
            )
        writing = grew or now - self._last_write < IDLE_SECONDS
        action = indexing_action(pending, indexed, writing=writing, wanted=wanted)
        if action == "build":
            await self._build(conn, dim, gen + 1, gen or None)
        elif action == "flip":  # a few rows: index them into the current generation
            await conn.execute(
                "UPDATE vectors SET gen = $2 WHERE (scope, scope_id, key) IN "
                "(SELECT scope, scope_id, key FROM vectors WHERE gen = 0 AND dim = $1 LIMIT $3)",
                dim,
                gen,
                FLIP_BATCH,
            )
            self._wake.set()
        return action is not None

    async def _build(self, conn: asyncpg.Connection, dim: int, gen: int, old: int | None) -> None:
        name = self._index_name(dim, gen)
        started = time.monotonic()
        # Rows moved to the new generation are outside the current index's predicate, so
        # this costs no HNSW upkeep; searches treat them as pending until the build ends.
        await conn.execute("UPDATE vectors SET gen = $2 WHERE dim = $1 AND gen = 0", dim, gen)
        # One core: the build runs beside live traffic on small machines.
        await conn.execute(
            "SET maintenance_work_mem = '256MB'; SET max_parallel_maintenance_workers = 0"
        )
        await conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")  # a failed earlier try
        await conn.execute(
            f"CREATE INDEX CONCURRENTLY {name} ON vectors USING hnsw "
            f"((vec::vector({dim})) {self.opclass}) WHERE dim = {dim} AND gen BETWEEN 1 AND {gen}"
        )
        self._generations[dim] = (time.monotonic(), gen)
        if old:
            await conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {self._index_name(dim, old)}")
        # Fresh statistics, or the planner may scan a whole scope for its few pending rows.
        await conn.execute("ANALYZE vectors")
        log.info("built HNSW index %s in %.1f s", name, time.monotonic() - started)

    # ------------------------------------------------------------ search
    async def _scope_count(self, conn: asyncpg.Connection, scope: str, scope_id: str) -> int:
        now = time.monotonic()
        cached = self._counts.get((scope, scope_id))
        if cached is not None and now - cached[0] < COUNT_TTL_SECONDS:
            return cached[1]
        count = int(
            await conn.fetchval(
                "SELECT count(*) FROM vectors WHERE scope = $1 AND scope_id = $2", scope, scope_id
            )
        )
        self._counts[(scope, scope_id)] = (now, count)
        if now - self._table_rows[0] >= COUNT_TTL_SECONDS:
            rows = await conn.fetchval(
                "SELECT reltuples FROM pg_class WHERE oid = 'vectors'::regclass"
            )
            self._table_rows = (now, float(rows or 0))
        return count

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
        query = np.asarray(query, dtype=np.float32)
        dim = len(query)
        want = 2 * top_k + 8
        now = time.monotonic()
        if now - self._searched.get(dim, -math.inf) >= DEMAND_SECONDS:
            self._wake.set()  # searches resumed: a load the indexer deferred is wanted now
        self._searched[dim] = now

        async def work(conn: asyncpg.Connection) -> list[Any]:
            held = await conn.fetchval(
                "SELECT dim FROM vectors WHERE scope = $1 AND scope_id = $2 LIMIT 1",
                scope,
                scope_id,
            )
            if held is None:
                return []
            if held != dim:
                raise dimension_mismatch(scope, scope_id, held, dim)
            conditions, params = _filter_sql(
                filters, [scope, scope_id, vector_literal(query), want]
            )
            exact = (
                f"SELECT {ROW_COLUMNS} FROM vectors WHERE scope = $1 AND scope_id = $2{conditions}"
            )
            order = f" ORDER BY vec {self.operator} $3::text::vector LIMIT $4"
            gen = await self._valid_generation(conn, dim) if dim <= HNSW_MAX_DIMENSION else 0
            count = await self._scope_count(conn, scope, scope_id) if gen else 0
            if count < HNSW_MIN_ROWS:
                return list(await conn.fetch(exact + order, *params))
            indexed = f" AND dim = {dim} AND gen BETWEEN 1 AND {gen}"
            share = count / max(float(count), self._table_rows[1])
            ef = min(1000, max(40, math.ceil(2 * want / share)))
            rows = await self._hnsw(conn, dim, exact + indexed, params, ef)
            if len(rows) < min(want, count) and (filters or len(rows) < top_k):
                rows = list(await conn.fetch(exact + indexed + order, *params))  # left short
            pending = f" AND (gen = 0 OR gen > {gen})"  # both arms have a partial index
            return rows + list(await conn.fetch(exact + pending + order, *params))

        rows = [_stored(r) for r in await self.store._call(work)]
        if not rows:
            return []
        distances = exact_distances(np.stack([r[2] for r in rows]), query, metric)
        ranked = sorted(zip(distances.tolist(), rows, strict=True), key=lambda p: (p[0], p[1][0]))
        return [
            VectorHit(scope, scope_id, row[0], score_from_distance(metric, d), d, *row[3:])
            for d, row in ranked[:top_k]
        ]

    async def _hnsw(
        self, conn: asyncpg.Connection, dim: int, select: str, params: list[Any], ef: int
    ) -> list[Any]:
        async with conn.transaction():
            # Custom plans (a generic plan cannot see the vector), and the index rather than
            # a sort of the scope, which the planner may prefer on stale statistics.
            await conn.execute(
                f"SELECT set_config('hnsw.ef_search', '{ef}', true), "
                "set_config('plan_cache_mode', 'force_custom_plan', true), "
                "set_config('enable_sort', 'off', true)"
            )
            return list(
                await conn.fetch(
                    f"{select} ORDER BY vec::vector({dim}) {self.operator} "
                    f"$3::text::vector({dim}) LIMIT $4",
                    *params,
                )
            )

    def close(self) -> None:
        if self._indexer is not None:
            self._indexer.cancel()
            self._indexer = None


def indexing_action(pending: int, indexed: int, *, writing: bool, wanted: bool) -> str | None:
    """What the indexer does for a dimension with ``pending`` unindexed rows and
    ``indexed`` rows in its valid generation: ``"build"`` a new generation over all of
    them, ``"flip"`` a batch of pending rows into the current one, or nothing.

    Building while writes stream only pays when searches meanwhile scan the pending
    rows (``wanted``): otherwise it takes CPU from the writes (on 2 cores, inserts went
    from ~2,400/s to ~1,800/s) to build generations that the next build replaces. Then
    it builds once pending rows outnumber the indexed ones twice, so the rows searched
    exactly stay at most two thirds and the builds' total work stays linear. When the
    writes pause, everything pending gets indexed: a build when there is no index yet
    or many rows are pending, row-by-row upkeep for a few.
    """
    if pending <= 0:
        return None
    if writing:
        if wanted and (indexed == 0 or pending > max(REBUILD_MIN_ROWS, 2 * indexed)):
            return "build"
        return None
    if indexed == 0 or pending > REBUILD_MIN_ROWS:
        return "build"
    return "flip"


def _filter_sql(filters: dict[str, Any] | None, params: list[Any]) -> tuple[str, list[Any]]:
    """`` AND metadata -> $n = $m::jsonb`` per filter: JSONB equality is the JSON equality
    the in-memory index implements (numbers by value, objects unordered, null explicit)."""
    sql = ""
    for name, value in (filters or {}).items():
        params += [name, dumps(value)]
        sql += f" AND metadata -> ${len(params) - 1} = ${len(params)}::jsonb"
    return sql, params
