"""Exact nearest-neighbour search over float32 matrices held in memory, one per scope id.

Backend-independent: the embedded backend uses it for every search; the PostgreSQL
backend uses it when the server has no ``pgvector``. The database stays the source
of truth: a scope is loaded from it on first search and then kept in step with
committed writes (:meth:`VectorIndex.apply`).

Per scope the rows are **append-only**: setting an existing key marks its old row
dead and appends a new one; deleting marks it dead; dead rows are dropped by a
compaction once they outnumber the live ones. Storage grows geometrically, so an
append costs amortised O(dim). Because no row below ``count`` ever changes, a
search can score a snapshot (arrays + ``count`` + a copy of the live mask) in a
worker thread (numpy releases the GIL in BLAS) while the event loop keeps
accepting writes: a search sees exactly the state at the moment it started.

Scoring is one matrix-vector product over the scope (or over the rows a metadata
filter selects, found through an inverted index): no Python loop over rows. The
best candidates are then re-scored in float64 so the reported numbers are exact.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .base import ClearOp, ScopeRef, VectorDeleteOp, VectorHit, VectorRecord, VectorSetOp
from .semantics import dimension_mismatch
from .vector_scope import ScopeVectors, Snapshot

log = logging.getLogger("agentfield_asgi.store.vectors")

METRICS = ("cosine", "dot", "l2")
INLINE_FLOATS = 1 << 16  # scopes smaller than this (rows x dim) are scored on the loop
SPLIT_FLOATS = 1 << 22  # larger scopes: dot products in parallel ranges of at least this
_TINY = np.float32(1e-30)


def limit_blas_threads(threads: int) -> Callable[[], None]:
    """Cap numpy's BLAS thread pool process-wide (0: leave it); returns the undo function.

    A search is a memory-bound matrix-vector product: extra BLAS threads do not make it
    faster, and on a busy machine they spin waiting for cores that other work holds
    (measured here at 100k x 384: 1 thread 1.2-2.7 ms, 2 threads 6-8 ms under load).
    """
    if threads <= 0:
        return lambda: None
    from threadpoolctl import threadpool_limits

    limiter = threadpool_limits(threads, user_api="blas")
    return limiter.restore_original_limits


def score_from_distance(metric: str, distance: float) -> float:
    """``score`` (higher is better, for every metric) from the metric's ``distance``.

    cosine: distance = 1 - cos, score = cos. dot: distance = -dot, score = dot.
    l2: distance = Euclidean distance, score = 1 / (1 + distance).
    """
    if metric == "cosine":
        return 1.0 - distance
    if metric == "dot":
        return -distance
    return 1.0 / (1.0 + distance)


def exact_distances(rows: np.ndarray, query: np.ndarray, metric: str) -> np.ndarray:
    """Distances (lower is better) of ``rows`` to ``query``, computed in float64."""
    m = rows.astype(np.float64)
    q = query.astype(np.float64)
    if metric == "l2":
        return np.sqrt(((m - q) ** 2).sum(axis=1))
    dots = m @ q
    if metric == "dot":
        return -dots
    denom = np.linalg.norm(m, axis=1) * np.linalg.norm(q)
    cos = np.divide(dots, denom, out=np.zeros_like(dots), where=denom > 0)
    return 1.0 - cos


def dot_range(snap: Snapshot, query: np.ndarray, out: np.ndarray, lo: int, hi: int) -> None:
    """``out[lo:hi]`` = dot products of candidates ``lo..hi`` with ``query`` (one BLAS call;
    numpy releases the GIL, so ranges run in parallel threads)."""
    if snap.rows is not None:
        out[lo:hi] = snap.matrix[snap.rows[lo:hi]] @ query
    else:
        np.matmul(snap.matrix[lo:hi], query, out=out[lo:hi])


def candidates(snap: Snapshot) -> int:
    return len(snap.rows) if snap.rows is not None else snap.count


def nearest(
    snap: Snapshot, query: np.ndarray, top_k: int, metric: str, dots: np.ndarray | None = None
) -> list[tuple[int, float]]:
    """``(row, distance)`` of the ``top_k`` nearest rows of a snapshot, best first.

    One float32 pass ranks every candidate (``dots``, if given, holds its dot products
    already); the best ``2k + 8`` are re-scored in float64, so the order near the cut
    and the reported distances are exact. Ties break by key. Pure function of its
    arguments: runs in a worker thread.
    """
    n = candidates(snap)
    if dots is None:
        dots = np.empty(n, dtype=np.float32)
        dot_range(snap, query, dots, 0, n)
    norms = snap.norms[snap.rows] if snap.rows is not None else snap.norms[:n]
    if metric == "cosine":
        rank = dots / np.maximum(norms, _TINY)
    elif metric == "dot":
        rank = dots
    else:  # l2: |m - q|^2 = |m|^2 - 2 m.q + |q|^2; |q|^2 is the same for every row
        rank = 2 * dots - norms * norms
    valid = n
    if snap.live is not None:
        rank[~snap.live] = -np.inf
        valid = int(np.count_nonzero(snap.live))
    if valid == 0:
        return []
    want = min(valid, 2 * top_k + 8)
    if want < n:
        picked = np.argpartition(rank, n - want)[n - want :]
    else:
        picked = np.arange(n)
    picked = picked[np.isfinite(rank[picked])]
    found = snap.rows[picked] if snap.rows is not None else picked
    distances = exact_distances(snap.matrix[found], query, metric)
    keys = snap.keys
    ordered = sorted(
        zip(distances.tolist(), found.tolist(), strict=True), key=lambda p: (p[0], keys[p[1]])
    )
    return [(row, dist) for dist, row in ordered[:top_k]]


Loader = Callable[[str, str], Awaitable["ScopeVectors | None"]]
"""Reads one scope's vectors from the database (None when it holds none)."""

StoredRow = tuple[str, int, np.ndarray, dict[str, Any], int, int]
"""``(key, dim, embedding, metadata, created_us, updated_us)`` as read from the database."""

Refresher = Callable[[str, str, list[str]], Awaitable[list[StoredRow]]]
"""Reads the current rows of some keys of a scope (absent keys are not returned)."""


@dataclass(slots=True)
class _Loading:
    future: asyncio.Future[ScopeVectors | None]
    pending: list[tuple[Any, Any]] = field(default_factory=list)


class VectorIndex:
    """In-memory vectors of the scopes searched so far, kept in step with committed writes.

    ``loader(scope, scope_id)`` reads a scope from the database (None when it holds
    no vectors). Call :meth:`apply` on the event loop after each commit, before the
    writer is answered, so a client always finds what it has just written.

    Writes committed by *other* processes (PostgreSQL with several instances) reach a
    loaded scope through :meth:`mark_changed` (from the event feed) and ``refresher``:
    the next search of that scope first re-reads the changed keys.
    """

    def __init__(
        self, loader: Loader, *, refresher: Refresher | None = None, workers: int | None = None
    ) -> None:
        self._loader = loader
        self._refresher = refresher
        self._scopes: dict[ScopeRef, ScopeVectors] = {}
        self._loading: dict[ScopeRef, _Loading] = {}
        self._generation = 0  # bumped by forget(): loads begun before it are not kept
        self._changed: dict[ScopeRef, set[str]] = {}
        self._refreshing: dict[ScopeRef, set[str]] = {}
        self._workers = workers or min(4, os.cpu_count() or 1)
        self._executor: ThreadPoolExecutor | None = None

    @property
    def loaded_scopes(self) -> int:
        return len(self._scopes)

    @property
    def nbytes(self) -> int:
        """Bytes held in numpy arrays (vectors, norms, masks) across loaded scopes."""
        return sum(s.nbytes for s in self._scopes.values())

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        self._scopes.clear()

    def forget(self) -> None:
        """Drop every loaded scope (writes were made that did not pass :meth:`apply`):
        each is read again from the database at its next search."""
        self._scopes.clear()
        self._changed.clear()
        self._generation += 1

    def is_held(self, scope: str, scope_id: str) -> bool:
        """Whether the scope is in memory (or being loaded)."""
        return (scope, scope_id) in self._scopes or (scope, scope_id) in self._loading

    def mark_changed(self, scope: str, scope_id: str, key: str) -> None:
        """Another process changed ``key``: re-read it before the scope's next search."""
        if self.is_held(scope, scope_id):
            self._changed.setdefault((scope, scope_id), set()).add(key)

    async def in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on the index's worker threads."""
        return await asyncio.get_running_loop().run_in_executor(self._pool(), fn, *args)

    # ------------------------------------------------------------ writes
    def apply(self, ops: Sequence[Any], results: Sequence[Any]) -> None:
        """Mirror committed ops (with their results) into loaded and loading scopes."""
        for op, result in zip(ops, results, strict=False):
            if not isinstance(op, VectorSetOp | VectorDeleteOp | ClearOp):
                continue
            ref = (op.scope, op.scope_id)
            loading = self._loading.get(ref)
            if loading is not None:
                loading.pending.append((op, result))
            elif ref in self._scopes:
                self._apply_one(ref, op, result)

    def _apply_one(self, ref: ScopeRef, op: Any, result: Any) -> None:
        refreshing = self._refreshing.get(ref)
        if isinstance(op, ClearOp):
            self._scopes.pop(ref, None)
            self._changed.pop(ref, None)
        elif isinstance(op, VectorDeleteOp):
            if result:
                self._remove(ref, op.key)
        elif isinstance(op, VectorSetOp) and isinstance(result, VectorRecord):
            embedding = np.asarray(op.embedding, dtype=np.float32)
            self._upsert(
                ref, op.key, embedding, result.metadata, result.created_us, result.updated_us
            )
        else:
            return
        if refreshing is not None:
            refreshing.add(getattr(op, "key", ""))

    def _remove(self, ref: ScopeRef, key: str) -> None:
        vectors = self._scopes.get(ref)
        if vectors is not None:
            vectors.remove(key)
            if not vectors:
                del self._scopes[ref]

    def _upsert(
        self,
        ref: ScopeRef,
        key: str,
        embedding: np.ndarray,
        metadata: dict[str, Any],
        created: int,
        updated: int,
    ) -> None:
        vectors = self._scopes.get(ref)
        if (
            vectors is None
            or len(vectors) == 0
            or (vectors.dim != len(embedding) and len(vectors) == 1 and key in vectors.rows)
        ):
            vectors = self._scopes[ref] = ScopeVectors(len(embedding))
        elif vectors.dim != len(embedding):
            # The store refuses this; if it ever happens, read the scope again.
            log.error("vector index out of step for %s; reloading it", ref)
            del self._scopes[ref]
            return
        vectors.upsert(key, embedding, metadata, created, updated)

    async def _refresh(self, ref: ScopeRef) -> None:
        """Re-read keys other processes changed. Keys this process wrote meanwhile are
        left as they are: writers are serialised, so its own committed state is as new."""
        keys = self._changed.pop(ref, None)
        if not keys or self._refresher is None or ref in self._refreshing:
            return
        written: set[str] = set()
        self._refreshing[ref] = written
        try:
            rows = await self._refresher(ref[0], ref[1], sorted(keys))
        except BaseException:
            self._changed.setdefault(ref, set()).update(keys)
            raise
        finally:
            del self._refreshing[ref]
        found = {row[0]: row for row in rows}
        for key in keys - written:
            row = found.get(key)
            if row is None:
                self._remove(ref, key)
            else:
                self._upsert(ref, key, row[2], row[3], row[4], row[5])

    # ------------------------------------------------------------ reads
    async def scope(self, scope: str, scope_id: str) -> ScopeVectors | None:
        """The scope's vectors, loading them from the database on first use."""
        ref = (scope, scope_id)
        vectors = self._scopes.get(ref)
        if vectors is not None:
            return vectors
        loading = self._loading.get(ref)
        if loading is None:
            loop = asyncio.get_running_loop()
            loading = self._loading[ref] = _Loading(loop.create_future())
            generation = self._generation
            try:
                loaded = await self._loader(scope, scope_id)
            except BaseException as exc:
                del self._loading[ref]
                loading.future.set_exception(exc)
                loading.future.exception()  # mark retrieved: waiters may be none
                raise
            del self._loading[ref]
            if generation != self._generation:  # read before writes forget() stands for
                loading.future.set_result(loaded)
                return loaded
            if loaded is not None and len(loaded):
                self._scopes[ref] = loaded
            # Writes committed while the database was being read: replaying them is
            # idempotent for those the read already saw.
            for op, result in loading.pending:
                self._apply_one(ref, op, result)
            vectors = self._scopes.get(ref)
            loading.future.set_result(vectors)
            return vectors
        return await asyncio.shield(loading.future)

    async def search(
        self,
        scope: str,
        scope_id: str,
        query: np.ndarray,
        *,
        top_k: int,
        filters: dict[str, Any] | None,
        metric: str,
    ) -> list[VectorHit]:
        """Best-first nearest neighbours of ``query`` in one scope id (exact)."""
        if metric not in METRICS:
            raise ValueError(f"unknown vector metric {metric!r}")
        if (scope, scope_id) in self._changed and (scope, scope_id) in self._scopes:
            await self._refresh((scope, scope_id))
        vectors = await self.scope(scope, scope_id)
        if vectors is None or len(vectors) == 0:
            return []
        if vectors.dim != len(query):
            raise dimension_mismatch(scope, scope_id, vectors.dim, len(query))
        snap = vectors.snapshot(filters)
        if snap is None:
            return []
        query = np.asarray(query, dtype=np.float32)
        n = candidates(snap)
        if n * vectors.dim <= INLINE_FLOATS:
            found = nearest(snap, query, top_k, metric)
        else:
            loop = asyncio.get_running_loop()
            # Large scopes: the dot products in ranges on all workers (one core alone does
            # not saturate memory bandwidth: ~1.5x faster here), then the selection.
            parts = max(1, min(self._workers, n * vectors.dim // SPLIT_FLOATS))
            dots = np.empty(n, dtype=np.float32)
            bounds = np.linspace(0, n, parts + 1).astype(int).tolist()
            await asyncio.gather(
                *(
                    loop.run_in_executor(self._pool(), dot_range, snap, query, dots, lo, hi)
                    for lo, hi in itertools.pairwise(bounds)
                )
            )
            found = await loop.run_in_executor(
                self._pool(), nearest, snap, query, top_k, metric, dots
            )
        # Rows below snap.count never change, so reading them after the await is safe.
        return [
            VectorHit(
                scope=scope,
                scope_id=scope_id,
                key=snap.keys[row],
                score=score_from_distance(metric, dist),
                distance=dist,
                metadata=snap.metadata[row],
                created_us=snap.created[row],
                updated_us=snap.updated[row],
            )
            for row, dist in found
        ]

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                self._workers, thread_name_prefix="agentfield-vectors"
            )
        return self._executor
