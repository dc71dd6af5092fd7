"""PostgreSQL without pgvector: exact search in memory, in the embedded backend's
:class:`~..vector_index.VectorIndex`, loaded per scope from the ``vectors`` table.
Writes of this process update it after COMMIT; writes of other instances arrive as
change events through the store's feed and are re-read before the next search."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import asyncpg

from ..base import Event, VectorDeleteOp, VectorRecord, VectorSetOp
from ..semantics import VECTOR_EVENT_KIND
from ..vector_index import StoredRow, VectorIndex
from ..vector_scope import MIN_CAPACITY, ScopeVectors
from ..vectors import LOAD_CHUNK, InMemorySearch, extend_from_rows
from .vectors import ROW_COLUMNS, PostgresVectors, stored_row

if TYPE_CHECKING:
    from .store import PostgresStore


class PostgresExactVectors(InMemorySearch, PostgresVectors):
    """No pgvector: exact search in memory, kept in step with every instance's writes."""

    def __init__(self, store: PostgresStore, reason: str) -> None:
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
            if event.metadata.get("kind") != VECTOR_EVENT_KIND or not self.index.is_held(
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
        return [stored_row(r) for r in rows]

    def close(self) -> None:
        self._unwatch()
        super().close()
