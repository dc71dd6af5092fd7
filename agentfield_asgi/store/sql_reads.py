"""The read side of the Store interface, once for both SQL backends.

A backend mixes in :class:`SQLReads` and supplies its :class:`~.sql.Dialect` and
``_rows(query, params)``; every read (records, events, control plane) then runs
the same query text on both, so they answer alike by construction.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any

from ..codec import loads, now_us
from ..errors import VectorsUnavailable
from . import sql
from .base import Event, EventFilter, Record, ScopeRef, ScopeSummary, VectorHit, VectorStore
from .sql import Dialect, event_from_row, record_from_row


class SQLReads:
    """Store read methods over :mod:`sql` queries."""

    dialect: Dialect
    _vectors: VectorStore | None  # the backend's vector part, or None

    async def _rows(self, query: str, params: Sequence[Any] = ()) -> Sequence[Sequence[Any]]:
        """Run a read query; raise StorageUnavailable when the database cannot answer."""
        raise NotImplementedError

    async def get(self, key: str, chain: Sequence[ScopeRef]) -> Record | None:
        rows = await self._rows(*sql.get_query(self.dialect, key, chain, now_us()))
        return record_from_row(rows[0]) if rows else None

    async def get_many(self, keys: Sequence[str], chain: Sequence[ScopeRef]) -> dict[str, Record]:
        if not keys:
            return {}
        rows = await self._rows(*sql.get_many_query(self.dialect, keys, chain, now_us()))
        # Lowest-priority scope first, so the best scope for each key is written last.
        return {r.key: r for r in map(record_from_row, rows)}

    async def list(
        self,
        scope: str,
        scope_id: str,
        *,
        prefix: str | None = None,
        pattern: str | None = None,
        limit: int | None = None,
        after_key: str | None = None,
    ) -> list[Record]:
        query = sql.list_query(
            self.dialect,
            scope,
            scope_id,
            now_us(),
            prefix=prefix,
            pattern=pattern,
            limit=limit,
            after_key=after_key,
        )
        return [record_from_row(r) for r in await self._rows(*query)]

    async def vector_search(
        self,
        scope: str,
        scope_id: str,
        query: Any,
        *,
        top_k: int,
        filters: dict[str, Any] | None,
        metric: str,
    ) -> builtins.list[VectorHit]:
        if self._vectors is None:
            raise VectorsUnavailable()
        return await self._vectors.search(
            scope, scope_id, query, top_k=top_k, filters=filters, metric=metric
        )

    async def scopes(
        self, scope: str | None = None, limit: int = 1000
    ) -> builtins.list[ScopeSummary]:
        rows = await self._rows(*sql.scopes_query(self.dialect, scope, limit))
        return [ScopeSummary(r[0], r[1], r[2]) for r in rows]

    async def expired_keys(self, now_us: int, limit: int) -> builtins.list[tuple[str, str, str]]:
        rows = await self._rows(*sql.expired_query(self.dialect, now_us, limit))
        return [(r[0], r[1], r[2]) for r in rows]

    async def events_after(
        self, after_id: int, limit: int, flt: EventFilter | None = None
    ) -> builtins.list[Event]:
        rows = await self._rows(*sql.events_after_query(self.dialect, after_id, limit, flt))
        return [event_from_row(r) for r in rows]

    async def history(
        self, flt: EventFilter, *, since_us: int | None, since_id: int | None, limit: int
    ) -> builtins.list[Event]:
        query = sql.history_query(
            self.dialect, flt, since_us=since_us, since_id=since_id, limit=limit
        )
        return [event_from_row(r) for r in await self._rows(*query)]

    async def schema_version(self) -> int:
        rows = await self._rows("SELECT MAX(version) FROM schema_version")
        return int(rows[0][0] or 0) if rows else 0

    async def compacted_through(self) -> int:
        rows = await self._rows(self.dialect.sql(sql.COMPACTED_THROUGH_SQL))
        return int(rows[0][0]) if rows else 0

    async def get_nodes(self) -> builtins.list[dict[str, Any]]:
        return [loads(r[0]) for r in await self._rows(self.dialect.sql(sql.GET_NODES_SQL))]

    async def get_execution(self, execution_id: str) -> dict[str, Any] | None:
        rows = await self._rows(self.dialect.sql(sql.GET_EXECUTION_SQL), [execution_id])
        return loads(rows[0][0]) if rows else None

    async def get_workflow(self, workflow_id: str) -> dict[str, Any] | None:
        rows = await self._rows(self.dialect.sql(sql.GET_WORKFLOW_SQL), [workflow_id])
        if not rows:
            return None
        workflow: dict[str, Any] = loads(rows[0][0])
        executions = await self._rows(self.dialect.sql(sql.GET_EXECUTIONS_SQL), [workflow_id])
        workflow["executions"] = [loads(r[0]) for r in executions]
        return workflow
