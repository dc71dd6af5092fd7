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
import logging
import math
import time
import zlib
from collections import Counter
from collections.abc import Sequence
from typing import Any

import asyncpg
import numpy as np
import orjson

from ..codec import dumps
from .base import ClearOp, Event, VectorDeleteOp, VectorHit, VectorRecord, VectorSetOp
from .vector_index import (
    MIN_CAPACITY,
    ScopeVectors,
    StoredRow,
    VectorIndex,
    dimension_mismatch,
    exact_distances,
    score_from_distance,
)
from .vectors import (
    EMBEDDING_DTYPE,
    EVENT_KIND,
    LOAD_CHUNK,
    LogEvent,
    encode_embedding,
    event_metadata,
    event_payload,
    extend_from_rows,
    metadata_of,
)

log = logging.getLogger("agentfield_asgi.store.vectors")

HNSW_MAX_DIMENSION = 2000  # pgvector's HNSW limit for the vector type
HNSW_MIN_ROWS = 2000  # below this an exact scan of the scope is as fast, and exact
COUNT_TTL_SECONDS = 10.0
SETUP_LOCK = 0x61667663  # "afvc": schema changes for pgvector, one instance at a time
OPERATORS = {
    "cosine": ("vector_cosine_ops", "<=>"),
    "dot": ("vector_ip_ops", "<#>"),
    "l2": ("vector_l2_ops", "<->"),
}

PREVIOUS_SQL = """
SELECT (SELECT dim FROM vectors WHERE scope = $1 AND scope_id = $2 AND key <> $3 LIMIT 1),
       p.dim, p.metadata, p.created_us
FROM (SELECT 1) AS one
LEFT JOIN vectors AS p ON p.scope = $1 AND p.scope_id = $2 AND p.key = $3
"""
"""Another key's dimension (the scope's), and this key's current row."""

UPSERT_COLUMNS = "scope, scope_id, key, dim, embedding, metadata, created_us, updated_us"
DELETE_SQL = "DELETE FROM vectors WHERE scope = $1 AND scope_id = $2 AND key = $3"
CLEAR_SQL = "DELETE FROM vectors WHERE scope = $1 AND scope_id = $2 RETURNING key, dim, metadata"
ROW_COLUMNS = "key, dim, embedding, metadata, created_us, updated_us"


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
        other_dim, prev_dim, prev_meta, prev_created = await conn.fetchrow(PREVIOUS_SQL, *where)
        if other_dim is not None and other_dim != dim:
            raise dimension_mismatch(op.scope, op.scope_id, other_dim, dim)
        created = prev_created if prev_created is not None else ts
        params = [
            *where,
            dim,
            encode_embedding(op.embedding),
            dumps(op.metadata) if op.metadata else None,
            created,
            ts,
        ]
        await conn.execute(self._upsert_sql(), *params, *self._extra(op))
        previous = event_payload(prev_dim, metadata_of(prev_meta)) if prev_dim is not None else None
        log_event(conn, ts, *where, "set", event_payload(dim, op.metadata), previous, meta, events)
        return VectorRecord(op.scope, op.scope_id, op.key, op.metadata, created, ts)

    def _upsert_sql(self) -> str:
        columns, values = UPSERT_COLUMNS, "$1, $2, $3, $4, $5, $6, $7, $8"
        updates = (
            "dim = excluded.dim, embedding = excluded.embedding, "
            "metadata = excluded.metadata, updated_us = excluded.updated_us"
        )
        if self.with_vec:
            columns, values, updates = (
                columns + ", vec",
                values + ", $9::text::vector",
                updates + ", vec = excluded.vec",
            )
        return (
            f"INSERT INTO vectors ({columns}) VALUES ({values}) "
            f"ON CONFLICT (scope, scope_id, key) DO UPDATE SET {updates}"
        )

    def _extra(self, op: VectorSetOp) -> list[Any]:
        return [vector_literal(op.embedding)] if self.with_vec else []

    async def clear_in_tx(
        self, conn: asyncpg.Connection, op: ClearOp, ts: int, events: list[Any], log_event: LogEvent
    ) -> int:
        rows = sorted(await conn.fetch(CLEAR_SQL, op.scope, op.scope_id), key=lambda r: r[0])
        meta = event_metadata(op.event_metadata)
        for key, dim, metadata in rows:
            log_event(
                conn,
                ts,
                op.scope,
                op.scope_id,
                key,
                "delete",
                None,
                event_payload(dim, metadata_of(metadata)),
                meta,
                events,
            )
        return len(rows)

    def close(self) -> None:
        pass


class PostgresExactVectors(_PostgresVectorRows):
    """No pgvector: exact search in memory, kept in step with every instance's writes."""

    def __init__(self, store: Any, reason: str) -> None:
        super().__init__(store)
        self.index = VectorIndex(self._load, refresher=self._reread)
        self.mode = f"exact (numpy, in memory; {reason})"
        self._own_sets: dict[tuple[str, str, str], int] = {}
        self._own_deletes: Counter[tuple[str, str, str]] = Counter()
        self._unwatch = store.watch(self._on_events)

    def apply_committed(self, ops: Sequence[Any], results: Sequence[Any]) -> None:
        self.index.apply(ops, results)
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
        return await self.index.search(
            scope, scope_id, query, top_k=top_k, filters=filters, metric=metric
        )

    def close(self) -> None:
        self._unwatch()
        self.index.close()


class PgvectorVectors(_PostgresVectorRows):
    """pgvector: rows carry ``vec``; HNSW per (dimension, metric) for large scopes."""

    with_vec = True

    def __init__(self, store: Any, version: str, metric: str) -> None:
        super().__init__(store)
        self.metric = metric
        self.opclass, self.operator = OPERATORS[metric]
        self.mode = (
            f"pgvector {version}: HNSW ({self.opclass}) for scopes of {HNSW_MIN_ROWS}+ vectors, "
            "exact below"
        )
        self._indexes: dict[int, str] = {}  # dim -> "valid" | "building"
        self._builds: set[asyncio.Task[None]] = set()
        self._counts: dict[tuple[str, str], tuple[float, int]] = {}
        self._table_rows: tuple[float, float] = (0.0, 0.0)

    async def prepare(self) -> None:
        """Add the ``vec`` column (and fill it for rows written without it), find valid indexes."""

        async def work(conn: asyncpg.Connection) -> None:
            async with conn.transaction():
                await conn.execute(f"SELECT pg_advisory_xact_lock({SETUP_LOCK})")
                await conn.execute("ALTER TABLE vectors ADD COLUMN IF NOT EXISTS vec vector")
                missing = await conn.fetch(
                    "SELECT scope, scope_id, key, embedding FROM vectors WHERE vec IS NULL"
                )
                if missing:
                    log.info("filling pgvector column for %d stored vectors", len(missing))
                    await conn.executemany(
                        "UPDATE vectors SET vec = $4::text::vector "
                        "WHERE scope = $1 AND scope_id = $2 AND key = $3",
                        [
                            (s, i, k, vector_literal(np.frombuffer(b, dtype=EMBEDDING_DTYPE)))
                            for s, i, k, b in missing
                        ],
                    )
            for (name,) in await conn.fetch(
                "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE i.indisvalid AND c.relname LIKE $1",
                f"vectors_hnsw_{self.metric}_%",
            ):
                suffix = name.rsplit("_", 1)[-1]
                if suffix.isdigit():
                    self._indexes[int(suffix)] = "valid"

        await self.store._call(work)

    # ------------------------------------------------------------ HNSW indexes
    def _index_name(self, dim: int) -> str:
        return f"vectors_hnsw_{self.metric}_{dim}"

    def _ensure_index(self, dim: int) -> None:
        """Start building the (dim, metric) index in the background unless known or too wide."""
        if dim > HNSW_MAX_DIMENSION or dim in self._indexes:
            return
        self._indexes[dim] = "building"
        task = asyncio.get_running_loop().create_task(self._build(dim))
        self._builds.add(task)
        task.add_done_callback(self._builds.discard)

    async def _build(self, dim: int) -> None:
        name = self._index_name(dim)
        lock = zlib.crc32(name.encode())
        conn: asyncpg.Connection | None = None
        try:
            conn = await asyncpg.connect(self.store._dsn)
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", lock):
                # Another instance is building it: look again later.
                await asyncio.sleep(5.0)
                self._indexes.pop(dim, None)
                return
            valid = await conn.fetchval(
                "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE c.relname = $1",
                name,
            )
            if valid is False:  # a build that died half-way: start again
                await conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
            if not valid:
                started = time.monotonic()
                await conn.execute("SET maintenance_work_mem = '256MB'")
                await conn.execute(
                    f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON vectors "
                    f"USING hnsw ((vec::vector({dim})) {self.opclass}) WHERE dim = {dim}"
                )
                log.info("built HNSW index %s in %.1f s", name, time.monotonic() - started)
            self._indexes[dim] = "valid"
        except Exception as exc:
            log.warning("cannot build HNSW index %s (exact search meanwhile): %s", name, exc)
            await asyncio.sleep(5.0)
            self._indexes.pop(dim, None)
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()

    # ------------------------------------------------------------ event loop
    def apply_committed(self, ops: Sequence[Any], results: Sequence[Any]) -> None:
        for op, result in zip(ops, results, strict=False):
            if isinstance(op, VectorSetOp) and isinstance(result, VectorRecord):
                self._ensure_index(len(op.embedding))
            elif isinstance(op, ClearOp | VectorDeleteOp):
                self._counts.pop((op.scope, op.scope_id), None)

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
                filters, [scope, scope_id, vector_literal(query), 2 * top_k + 8]
            )
            rows = None
            if self._indexes.get(dim) == "valid":
                count = await self._scope_count(conn, scope, scope_id)
                if count >= HNSW_MIN_ROWS:
                    share = count / max(float(count), self._table_rows[1])
                    ef = min(1000, max(40, math.ceil((4 * top_k + 8) / share)))
                    rows = await self._hnsw(conn, dim, conditions, params, ef)
                    if len(rows) < top_k and (filters or len(rows) < count):
                        rows = None  # filtering or a sparse graph left it short: be exact
            else:
                self._ensure_index(dim)
            if rows is None:
                rows = await conn.fetch(
                    f"SELECT {ROW_COLUMNS} FROM vectors "
                    f"WHERE scope = $1 AND scope_id = $2{conditions} "
                    f"ORDER BY vec {self.operator} $3::text::vector LIMIT $4",
                    *params,
                )
            return list(rows)

        rows = [_stored(r) for r in await self.store._call(work)]
        if not rows:
            return []
        distances = exact_distances(np.stack([r[2] for r in rows]), query, metric)
        ranked = sorted(zip(distances.tolist(), rows, strict=True), key=lambda p: (p[0], p[1][0]))[
            :top_k
        ]
        return [
            VectorHit(
                scope,
                scope_id,
                row[0],
                score_from_distance(metric, dist),
                dist,
                row[3],
                row[4],
                row[5],
            )
            for dist, row in ranked
        ]

    async def _hnsw(
        self, conn: asyncpg.Connection, dim: int, conditions: str, params: list[Any], ef: int
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
                    f"SELECT {ROW_COLUMNS} FROM vectors "
                    f"WHERE scope = $1 AND scope_id = $2 AND dim = {dim}{conditions} "
                    f"ORDER BY vec::vector({dim}) {self.operator} $3::text::vector({dim}) LIMIT $4",
                    *params,
                )
            )

    def close(self) -> None:
        for task in list(self._builds):
            task.cancel()


def _filter_sql(filters: dict[str, Any] | None, params: list[Any]) -> tuple[str, list[Any]]:
    """`` AND metadata -> $n = $m::jsonb`` per filter: JSONB equality is the JSON equality
    the in-memory index implements (numbers by value, objects unordered, null explicit)."""
    sql = ""
    for name, value in (filters or {}).items():
        params += [name, dumps(value)]
        sql += f" AND metadata -> ${len(params) - 1} = ${len(params)}::jsonb"
    return sql, params
