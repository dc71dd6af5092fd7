"""Vector memory: what every backend's vector part shares.

Each backend builds its part (a :class:`~.base.VectorStore`) when it opens:
``sqlite/vectors.py``, ``postgres/vectors.py`` (with ``exact.py`` and ``pgvector.py``).
Inside the writer transaction, for a :class:`VectorSetOp` / :class:`VectorDeleteOp` the
backend reads the key's row and another key's dimension, decides with
:func:`~.semantics.plan_vector`, writes the row and logs the change event (key, action,
the vector's metadata and dimension: never the embedding); for a :class:`ClearOp` the
scope's vectors go, one delete event each (:func:`log_cleared`). Then:

* ``apply_committed(ops, results)`` on the event loop after COMMIT, before the
  writer is answered: keeps the in-memory index in step;
* ``search(...)``: exact nearest neighbours (see ``vector_index.py``).

Embeddings are stored as little-endian float32 blobs with their dimension, in the
``vectors`` table of either database, so the database alone can rebuild any index.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from .base import ClearOp, VectorHit
from .semantics import metadata_of, vector_event_metadata, vector_payload
from .vector_index import VectorIndex
from .vector_scope import MIN_CAPACITY, ScopeVectors

EMBEDDING_DTYPE = np.dtype("<f4")

LogEvent = Callable[..., None]
"""The store's ``_log(conn, ts, scope, scope_id, key, action, data, previous, meta, events)``."""


def encode_embedding(embedding: np.ndarray) -> bytes:
    return np.asarray(embedding, dtype=EMBEDDING_DTYPE).tobytes()


def decode_embeddings(blobs: Sequence[bytes], dim: int) -> np.ndarray:
    """Blobs of one dimension -> a read-only (n, dim) float32 view of their concatenation."""
    joined = b"".join(blobs)
    return np.frombuffer(joined, dtype=EMBEDDING_DTYPE).reshape(len(blobs), dim)


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
    meta = vector_event_metadata(op.event_metadata)
    for key, dim, metadata in rows:
        removed = vector_payload(dim, metadata_of(metadata))
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


class InMemorySearch:
    """Search in a :class:`VectorIndex` held in memory and kept in step with committed
    writes: the SQLite backend, and PostgreSQL without pgvector."""

    index: VectorIndex

    mode: str

    def apply_committed(self, ops: Sequence[Any], results: Sequence[Any]) -> None:
        self.index.apply(ops, results)

    def forget(self) -> None:
        self.index.forget()

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
