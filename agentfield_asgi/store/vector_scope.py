"""One scope's vectors in memory: an append-only float32 matrix with row bookkeeping and
metadata postings (:class:`ScopeVectors`), and the immutable view one search reads
(:class:`Snapshot`). :mod:`.vector_index` holds one per loaded scope and searches them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

MIN_CAPACITY = 16
GROWTH = 1.5
COMPACT_MIN_DEAD = 256


def filter_term(field_name: str, value: Any) -> tuple[str, Any]:
    """A hashable form of ``metadata[field] == value`` that compares as JSON does.

    Numbers compare by value (1 == 1.0) but never equal booleans; objects and
    arrays compare structurally (key order ignored).
    """
    return (field_name, _canonical(value))


def _canonical(value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, int | float):
        return ("n", int(value) if float(value).is_integer() else float(value))
    return ("j", orjson.dumps(_normalise(value), option=orjson.OPT_SORT_KEYS))


def _normalise(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


@dataclass(slots=True)
class Snapshot:
    """An immutable view of a scope for one search (safe to read from a worker thread)."""

    matrix: np.ndarray
    norms: np.ndarray
    count: int
    live: np.ndarray | None  # mask over [0, count) when ``rows`` is None
    rows: np.ndarray | None  # candidate rows (all live) when a filter applies
    keys: list[str]
    metadata: list[dict[str, Any]]
    created: list[int]
    updated: list[int]


class ScopeVectors:
    """The vectors of one scope id: an append-only float32 matrix plus row bookkeeping."""

    def __init__(self, dim: int, capacity: int = MIN_CAPACITY) -> None:
        self.dim = dim
        capacity = max(capacity, MIN_CAPACITY)
        self.matrix = np.empty((capacity, dim), dtype=np.float32)
        self.norms = np.empty(capacity, dtype=np.float32)
        self.live = np.zeros(capacity, dtype=bool)
        self.count = 0
        self.dead = 0
        self.keys: list[str] = []
        self.metadata: list[dict[str, Any]] = []
        self.created: list[int] = []
        self.updated: list[int] = []
        self.rows: dict[str, int] = {}
        # filter_term -> row or set of rows (live rows only; a single row is kept unboxed
        # because most metadata values, e.g. ids and texts, are unique).
        self.postings: dict[tuple[str, Any], int | set[int]] = {}

    def extend(
        self,
        keys: Sequence[str],
        matrix: np.ndarray,
        metadata: Sequence[dict[str, Any]],
        created: Sequence[int],
        updated: Sequence[int],
    ) -> None:
        """Append many new keys at once (loading from the database). Keys must not be present."""
        n = len(keys)
        while self.count + n > len(self.matrix):
            self._make_room()
        start, end = self.count, self.count + n
        self.matrix[start:end] = matrix
        self.norms[start:end] = np.sqrt(
            np.einsum("ij,ij->i", self.matrix[start:end], self.matrix[start:end])
        )
        self.live[start:end] = True
        self.keys.extend(keys)
        self.metadata.extend(metadata)
        self.created.extend(created)
        self.updated.extend(updated)
        self.rows.update(zip(keys, range(start, end), strict=True))
        for row, meta in enumerate(metadata, start):
            self._post(row, meta)
        self.count = end

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def nbytes(self) -> int:
        return int(self.matrix.nbytes + self.norms.nbytes + self.live.nbytes)

    # ------------------------------------------------------------ writes
    def upsert(
        self, key: str, embedding: np.ndarray, metadata: dict[str, Any], created: int, updated: int
    ) -> None:
        old = self.rows.get(key)
        if old is not None:
            self._kill(old)
        if self.count == len(self.matrix):
            self._make_room()
        row = self.count
        self.matrix[row] = embedding
        self.norms[row] = np.sqrt(np.dot(embedding, embedding))
        self.live[row] = True
        self.keys.append(key)
        self.metadata.append(metadata)
        self.created.append(created)
        self.updated.append(updated)
        self.rows[key] = row
        self._post(row, metadata)
        self.count = row + 1

    def remove(self, key: str) -> bool:
        row = self.rows.pop(key, None)
        if row is None:
            return False
        self._kill(row, popped=True)
        if self.dead >= COMPACT_MIN_DEAD and self.dead > 2 * len(self.rows):
            self._compact()  # give memory back when most of the scope was deleted
        return True

    def _kill(self, row: int, popped: bool = False) -> None:
        if not popped:
            del self.rows[self.keys[row]]
        self.live[row] = False
        self.dead += 1
        for name, value in self.metadata[row].items():
            term = filter_term(name, value)
            posting = self.postings.get(term)
            if isinstance(posting, set):
                posting.discard(row)
                if len(posting) == 1:
                    self.postings[term] = next(iter(posting))
            elif posting == row:
                del self.postings[term]

    def _post(self, row: int, metadata: dict[str, Any]) -> None:
        for name, value in metadata.items():
            term = filter_term(name, value)
            posting = self.postings.get(term)
            if posting is None:
                self.postings[term] = row
            elif isinstance(posting, set):
                posting.add(row)
            else:
                self.postings[term] = {posting, row}

    def _make_room(self) -> None:
        """Compact when dead rows dominate, else grow geometrically (amortised O(1) appends).
        Both build new arrays: snapshots held by running searches keep the old ones."""
        if self.dead >= COMPACT_MIN_DEAD and self.dead >= len(self.rows):
            self._compact()
            return
        capacity = int(len(self.matrix) * GROWTH) + 1
        n = self.count
        matrix = np.empty((capacity, self.dim), dtype=np.float32)
        norms = np.empty(capacity, dtype=np.float32)
        live = np.zeros(capacity, dtype=bool)
        matrix[:n] = self.matrix[:n]
        norms[:n] = self.norms[:n]
        live[:n] = self.live[:n]
        self.matrix, self.norms, self.live = matrix, norms, live

    def _compact(self) -> None:
        """Drop dead rows. Renumbers rows, so the lists are rebuilt too (never edited in
        place: a running search may hold the old ones)."""
        keep = np.flatnonzero(self.live[: self.count])
        n = len(keep)
        capacity = max(MIN_CAPACITY, int(n * GROWTH) + 1)
        matrix = np.empty((capacity, self.dim), dtype=np.float32)
        norms = np.empty(capacity, dtype=np.float32)
        live = np.zeros(capacity, dtype=bool)
        matrix[:n] = self.matrix[keep]
        norms[:n] = self.norms[keep]
        live[:n] = True
        picked = keep.tolist()
        self.keys = [self.keys[i] for i in picked]
        self.metadata = [self.metadata[i] for i in picked]
        self.created = [self.created[i] for i in picked]
        self.updated = [self.updated[i] for i in picked]
        self.rows = {k: i for i, k in enumerate(self.keys)}
        self.postings = {}
        for row, metadata in enumerate(self.metadata):
            self._post(row, metadata)
        self.matrix, self.norms, self.live = matrix, norms, live
        self.count, self.dead = n, 0

    # ------------------------------------------------------------ reads
    def snapshot(self, filters: dict[str, Any] | None) -> Snapshot | None:
        """What a search needs, or None when a filter matches nothing."""
        rows = None
        live = None
        if filters:
            found: set[int] | None = None
            postings = []
            for name, value in filters.items():
                posting = self.postings.get(filter_term(name, value))
                if posting is None:
                    return None
                postings.append({posting} if isinstance(posting, int) else posting)
            postings.sort(key=len)
            found = set(postings[0]).intersection(*postings[1:])
            if not found:
                return None
            rows = np.fromiter(found, dtype=np.int64, count=len(found))
        else:
            live = self.live[: self.count].copy()
        return Snapshot(
            self.matrix,
            self.norms,
            self.count,
            live,
            rows,
            self.keys,
            self.metadata,
            self.created,
            self.updated,
        )
