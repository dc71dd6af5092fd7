"""Vector memory: what every backend shares, and the embedded backend's hooks.

A store attaches its vector part at open (``store._vectors``). Inside the writer
transaction, for a :class:`VectorSetOp` / :class:`VectorDeleteOp` the row is written,
the scope's dimension checked and the change event logged (key, action, the vector's
metadata and dimension: never the embedding); for a :class:`ClearOp` the scope's
vectors go, one delete event each. On SQLite that is :func:`write_vector_in_tx` and
:func:`clear_vectors_in_tx` (module functions: they need no index, so they run in the
writer process too); on PostgreSQL the vector part's ``apply_in_tx`` / ``clear_in_tx``.
Then:

* ``apply_committed(ops, results)`` on the event loop after COMMIT, before the
  writer is answered: keeps the in-memory index in step;
* ``search(...)``: exact nearest neighbours (see ``vector_index.py``).

Embeddings are stored as little-endian float32 blobs with their dimension, in the
``vectors`` table of either database, so the database alone can rebuild any index.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from ..codec import dumps, loads
from .base import ClearOp, Event, VectorDeleteOp, VectorHit, VectorRecord, VectorSetOp
from .vector_index import MIN_CAPACITY, ScopeVectors, VectorIndex, dimension_mismatch

EMBEDDING_DTYPE = np.dtype("<f4")
EVENT_KIND = "vector"
"""``metadata["kind"]`` of a vector change event (a key-value event has no ``kind``)."""

LogEvent = Callable[..., None]
"""The store's ``_log(conn, ts, scope, scope_id, key, action, data, previous, meta, events)``."""


def encode_embedding(embedding: np.ndarray) -> bytes:
    return np.asarray(embedding, dtype=EMBEDDING_DTYPE).tobytes()


def decode_embeddings(blobs: Sequence[bytes], dim: int) -> np.ndarray:
    """Blobs of one dimension -> a read-only (n, dim) float32 view of their concatenation."""
    joined = b"".join(blobs)
    return np.frombuffer(joined, dtype=EMBEDDING_DTYPE).reshape(len(blobs), dim)


def event_payload(dim: int, metadata: dict[str, Any] | None) -> bytes:
    """An event's ``data`` / ``previous_data`` for a vector: its metadata and dimension."""
    return dumps({"metadata": metadata or {}, "dimension": dim})


def event_metadata(base: dict[str, Any]) -> dict[str, Any]:
    return {**base, "kind": EVENT_KIND}


def log_cleared(
    conn: Any,
    op: ClearOp,
    ts: int,
    rows: Sequence[Sequence[Any]],
    events: list[Any],
    log: LogEvent,
) -> int:
    """One delete event per vector a clear removed (rows of ``key, dim, metadata`` in key
    order); how many there were."""
    meta = event_metadata(op.event_metadata)
    for key, dim, metadata in rows:
        removed = event_payload(dim, metadata_of(metadata))
        log(conn, ts, op.scope, op.scope_id, key, "delete", None, removed, meta, events)
    return len(rows)


LOAD_CHUNK = 4096


def load_scope(dim: int, count: int, chunks: Iterable[Sequence[Sequence[Any]]]) -> ScopeVectors:
    """A :class:`ScopeVectors` for ``count`` rows of dimension ``dim``, filled from chunks of
    ``(key, blob, metadata JSON, created_us, updated_us)`` rows: memory stays at the
    matrix plus one chunk, however large the scope."""
    vectors = ScopeVectors(dim, count + max(MIN_CAPACITY, count // 8))
    for rows in chunks:
        extend_from_rows(vectors, rows)
    return vectors


def extend_from_rows(vectors: ScopeVectors, rows: Sequence[Sequence[Any]]) -> None:
    """Append ``(key, blob, metadata JSON, created_us, updated_us)`` rows read from a database."""
    vectors.extend(
        [r[0] for r in rows],
        decode_embeddings([r[1] for r in rows], vectors.dim),
        [metadata_of(r[2]) for r in rows],
        [r[3] for r in rows],
        [r[4] for r in rows],
    )


def metadata_of(raw: Any) -> dict[str, Any]:
    """Stored metadata (JSON text or bytes, or already decoded) as a dict."""
    if not raw:
        return {}
    return raw if isinstance(raw, dict) else loads(raw)  # type: ignore[no-any-return]


class InMemorySearch:
    """Search in a :class:`VectorIndex` held in memory and kept in step with committed
    writes: the SQLite backend, and PostgreSQL without pgvector."""

    index: VectorIndex

    def apply_committed(self, ops: Sequence[Any], results: Sequence[Any]) -> None:
        self.index.apply(ops, results)

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
        self.index.close()


class SQLiteVectors(InMemorySearch):
    """The embedded backend's vector part: rows in SQLite, search in a :class:`VectorIndex`."""

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
    previous = conn.execute(
        "SELECT dim, metadata, created_us FROM vectors "
        "WHERE scope = ? AND scope_id = ? AND key = ?",
        where,
    ).fetchone()
    previous_json = event_payload(previous[0], metadata_of(previous[1])) if previous else None
    result: VectorRecord | bool
    if isinstance(op, VectorDeleteOp):
        if previous is None:
            return False
        conn.execute("DELETE FROM vectors WHERE scope = ? AND scope_id = ? AND key = ?", where)
        action, data, result = "delete", None, True
    else:
        dim = len(op.embedding)
        other = conn.execute(
            "SELECT dim FROM vectors WHERE scope = ? AND scope_id = ? AND key <> ? LIMIT 1",
            where,
        ).fetchone()
        if other is not None and other[0] != dim:
            raise dimension_mismatch(op.scope, op.scope_id, other[0], dim)
        created = previous[2] if previous else ts
        conn.execute(
            "INSERT OR REPLACE INTO vectors (scope, scope_id, key, dim, embedding, metadata, "
            "created_us, updated_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                *where,
                dim,
                encode_embedding(op.embedding),
                dumps(op.metadata).decode() if op.metadata else None,
                created,
                ts,
            ),
        )
        action, data = "set", event_payload(dim, op.metadata)
        result = VectorRecord(op.scope, op.scope_id, op.key, op.metadata, created, ts)
    metadata = event_metadata(op.event_metadata)
    log(conn, ts, op.scope, op.scope_id, op.key, action, data, previous_json, metadata, events)
    return result


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


async def attach_sqlite_vectors(store: Any) -> None:
    """Give an open :class:`~agentfield_asgi.store.sqlite.SQLiteStore` its vector part."""
    store._vectors = SQLiteVectors(store.path)


async def attach_postgres_vectors(store: Any) -> None:
    """Give an open PostgreSQL store its vector part: pgvector when the server has the
    extension (or lets us create it), else exact search in memory (see ``postgres/vectors.py``)."""
    from .postgres.vectors import PgvectorVectors, PostgresExactVectors, detect_pgvector

    version, reason = await detect_pgvector(store)
    if version is not None:
        vectors = PgvectorVectors(store, version, store.vector_metric)
        await vectors.prepare()
        store._vectors = vectors
    else:
        store._vectors = PostgresExactVectors(store, reason)
