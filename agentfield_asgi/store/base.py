"""The storage interface every backend implements, and its value objects.

Nothing outside ``store/`` knows which backend it holds. A backend:

* applies writes as *units* (lists of ops that succeed or fail together); many
  concurrent units share one transaction and one fsync (group commit), and a
  caller is answered only after that COMMIT;
* writes each change and its event row in the same transaction;
* hands every committed event, exactly once and in id order, to the watcher set
  with :meth:`Store.watch` (in-process after commit on SQLite; via LISTEN/NOTIFY
  and the event table on PostgreSQL, so writes from other instances arrive too).
"""

from __future__ import annotations

import abc
import builtins
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from ..codec import Fragment, dumps, format_ts, loads
from .timing import GroupTiming

Scope = Literal["workflow", "session", "actor", "global"]
SCOPES: tuple[Scope, ...] = ("workflow", "session", "actor", "global")
"""Scope names in resolution order (an unscoped read tries them in this order)."""
SCOPE_RANK: dict[str, int] = {s: i for i, s in enumerate(SCOPES)}
GLOBAL_SCOPE_ID = "global"

ScopeRef = tuple[str, str]
"""``(scope, scope_id)``."""


@dataclass(slots=True)
class Record:
    """One stored key. ``data_json`` is the value as compact JSON bytes."""

    scope: str
    scope_id: str
    key: str
    data_json: bytes
    created_us: int
    updated_us: int
    version: int
    metadata: dict[str, Any] = field(default_factory=dict)
    expires_us: int | None = None

    @property
    def data(self) -> Any:
        return loads(self.data_json)

    def to_dict(self) -> dict[str, Any]:
        """The protocol's record object (``data`` embedded without re-encoding)."""
        out: dict[str, Any] = {
            "scope": self.scope,
            "scope_id": self.scope_id,
            "key": self.key,
            "data": Fragment(self.data_json),
            "access_level": "private",
            "created_at": format_ts(self.created_us),
            "updated_at": format_ts(self.updated_us),
            "metadata": self.metadata,
            "version": self.version,
        }
        if self.expires_us is not None:
            out["expires_at"] = format_ts(self.expires_us)
        return out

    def to_json(self) -> bytes:
        return dumps(self.to_dict())


Action = Literal["set", "delete"]


@dataclass(slots=True)
class Event:
    """One entry of the change log. ``id`` is strictly increasing in commit order."""

    id: int
    ts_us: int
    scope: str
    scope_id: str
    key: str
    action: str
    data_json: bytes | None
    previous_json: bytes | None
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The protocol's event object: the one encoding for SSE, WebSocket and history."""
        return {
            "id": str(self.id),
            "type": "memory_change",
            "timestamp": format_ts(self.ts_us),
            "scope": self.scope,
            "scope_id": self.scope_id,
            "key": self.key,
            "action": self.action,
            "data": None if self.data_json is None else Fragment(self.data_json),
            "previous_data": None if self.previous_json is None else Fragment(self.previous_json),
            "metadata": self.metadata,
        }

    def to_json(self) -> bytes:
        return dumps(self.to_dict())

    def to_sse(self) -> bytes:
        """One Server-Sent Events frame: ``id``, ``event: message``, ``data`` (compact JSON
        has no newline, so one ``data:`` line)."""
        return b"id: %d\nevent: message\ndata: %s\n\n" % (self.id, self.to_json())

    @property
    def data(self) -> Any:
        return None if self.data_json is None else loads(self.data_json)

    @property
    def previous_data(self) -> Any:
        return None if self.previous_json is None else loads(self.previous_json)


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events a reader wants: any of ``patterns`` (none = all), optionally one scope / id."""

    patterns: tuple[str, ...] = ()
    scope: str | None = None
    scope_id: str | None = None


# ---------------------------------------------------------------- write ops


@dataclass(slots=True)
class SetOp:
    """Store ``data_json`` at (scope, scope_id, key).

    ``if_version``: None = unconditional; 0 = only if absent; N = only if the
    current version is N (else :class:`~agentfield_asgi.errors.VersionConflict`).
    ``event_metadata`` goes into the change event (agent_id, workflow_id, ...).
    """

    scope: str
    scope_id: str
    key: str
    data_json: bytes
    event_metadata: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    if_version: int | None = None
    ttl_seconds: float | None = None


@dataclass(slots=True)
class DeleteOp:
    """Delete a key; no event when it is absent. ``expired_only`` is for the TTL purger."""

    scope: str
    scope_id: str
    key: str
    event_metadata: dict[str, Any] = field(default_factory=dict)
    if_version: int | None = None
    expired_only: bool = False


@dataclass(slots=True)
class IncrOp:
    """Atomically add ``by`` to a numeric value (absent counts as 0)."""

    scope: str
    scope_id: str
    key: str
    by: int | float = 1
    event_metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class ClearOp:
    """Delete every key of one scope id (and its vectors), one delete event per key."""

    scope: str
    scope_id: str
    event_metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class VectorSetOp:
    scope: str
    scope_id: str
    key: str
    embedding: Any  # numpy float32 1-D array
    metadata: dict[str, Any] = field(default_factory=dict)
    event_metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class VectorDeleteOp:
    scope: str
    scope_id: str
    key: str
    event_metadata: dict[str, Any] = field(default_factory=dict)


WriteOp = SetOp | DeleteOp | IncrOp | ClearOp | VectorSetOp | VectorDeleteOp
"""Results by op: SetOp/IncrOp -> Record; DeleteOp -> the deleted Record or None;
ClearOp -> number of keys removed; VectorSetOp -> VectorRecord; VectorDeleteOp -> bool."""


@dataclass(slots=True)
class VectorRecord:
    scope: str
    scope_id: str
    key: str
    metadata: dict[str, Any]
    created_us: int
    updated_us: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "scope": self.scope,
            "scope_id": self.scope_id,
            "metadata": self.metadata,
        }


@dataclass(slots=True)
class VectorHit:
    scope: str
    scope_id: str
    key: str
    score: float
    distance: float
    metadata: dict[str, Any]
    created_us: int
    updated_us: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "scope_id": self.scope_id,
            "key": self.key,
            "score": self.score,
            "distance": self.distance,
            "metadata": self.metadata,
            "created_at": format_ts(self.created_us),
            "updated_at": format_ts(self.updated_us),
        }


@dataclass(slots=True)
class ScopeSummary:
    scope: str
    scope_id: str
    keys: int


EventWatcher = Callable[[list[Event]], None]
"""Called synchronously on the event loop with each batch of new events, in id order."""


class VectorStore(Protocol):
    """A backend's vector part, built by the backend when it opens (``Store._vectors``).

    Writes go through the backend's writer (its own transaction code, deciding with
    :func:`~agentfield_asgi.store.semantics.plan_vector`); this is what the store asks of
    the part around them."""

    mode: str
    """How searches are answered (exact in memory, pgvector HNSW...)."""

    def apply_committed(self, ops: Sequence[Any], results: Sequence[Any]) -> None:
        """After COMMIT, before the writer is answered: keep what is held in step."""

    def forget(self) -> None:
        """Drop what is held in memory (it reloads on use): writes may have been missed."""

    async def search(
        self,
        scope: str,
        scope_id: str,
        query: Any,
        *,
        top_k: int,
        filters: dict[str, Any] | None,
        metric: str,
    ) -> builtins.list[VectorHit]:
        """Nearest neighbours of ``query`` in one scope."""

    def close(self) -> None:
        """Stop background work."""


class Store(abc.ABC):
    """Durable scoped key-value memory with a change log. See the module docstring."""

    _vectors: VectorStore | None = None
    """The vector part, set by the backend's own :meth:`open`."""

    url: str
    kind: str  # "sqlite" | "postgresql"
    vector_metric: str = "cosine"
    """Set by the service before :meth:`open` (a backend may build metric-specific indexes)."""

    # -- lifecycle
    @abc.abstractmethod
    async def open(self) -> None:
        """Connect, create or migrate the schema, start background work."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Finish queued writes, stop background work, disconnect."""

    # -- reads
    @abc.abstractmethod
    async def get(self, key: str, chain: Sequence[ScopeRef]) -> Record | None:
        """The first live record for ``key`` in ``chain`` order, in one query."""

    @abc.abstractmethod
    async def get_many(self, keys: Sequence[str], chain: Sequence[ScopeRef]) -> dict[str, Record]:
        """Like :meth:`get` for many keys at once; missing keys are absent from the result."""

    @abc.abstractmethod
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
        """Live records of one scope id, ordered by key, starting after ``after_key``."""

    @abc.abstractmethod
    async def scopes(
        self, scope: str | None = None, limit: int = 1000
    ) -> builtins.list[ScopeSummary]:
        """Which scope ids hold keys (for the inspector)."""

    # -- writes
    @abc.abstractmethod
    async def write(self, ops: Sequence[WriteOp]) -> builtins.list[Any]:
        """Apply ``ops`` in one transaction, all or nothing; durable when it returns."""

    async def set(self, op: SetOp) -> Record:
        return (await self.write([op]))[0]

    async def delete(self, op: DeleteOp) -> Record | None:
        return (await self.write([op]))[0]

    # -- events
    @abc.abstractmethod
    def watch(self, watcher: EventWatcher) -> Callable[[], None]:
        """Call ``watcher`` with every event committed from now on, in id order; returns an
        unsubscribe function."""

    @abc.abstractmethod
    async def last_event_id(self) -> int:
        """The newest committed event id (0 when the log is empty)."""

    @abc.abstractmethod
    async def events_after(
        self, after_id: int, limit: int, flt: EventFilter | None = None
    ) -> builtins.list[Event]:
        """Events with id > ``after_id``, oldest first, at most ``limit``."""

    @abc.abstractmethod
    async def history(
        self, flt: EventFilter, *, since_us: int | None, since_id: int | None, limit: int
    ) -> builtins.list[Event]:
        """Without ``since_id``: the newest ``limit`` matching events (at or after
        ``since_us``), oldest first. With ``since_id``: the first ``limit`` after it."""

    @abc.abstractmethod
    async def compacted_through(self) -> int:
        """Highest event id removed by retention (0 if none): a resume point below it has a gap."""

    @abc.abstractmethod
    async def compact(self, *, max_age_seconds: float | None, max_events: int | None) -> int:
        """Drop old events per retention; returns how many were removed."""

    @abc.abstractmethod
    async def expired_keys(self, now_us: int, limit: int) -> builtins.list[tuple[str, str, str]]:
        """``(scope, scope_id, key)`` of records whose TTL has passed."""

    # -- observation (metrics)
    group_observer: Callable[[GroupTiming], None] | None = None
    """Set by the metrics: called with each committed write group's :class:`GroupTiming`."""

    def observe_group(self, timing: GroupTiming) -> None:
        if self.group_observer is not None:
            self.group_observer(timing)

    def stats(self) -> dict[str, float]:
        """Gauges for the metrics: the vector index's size in memory (and, on PostgreSQL, the
        connection pool's use)."""
        index = getattr(getattr(self, "_vectors", None), "index", None)
        if index is None:
            return {}
        return {"vector_index_scopes": index.loaded_scopes, "vector_index_bytes": index.nbytes}

    # -- readiness
    @abc.abstractmethod
    def writer_problem(self) -> str | None:
        """Why writes cannot be made right now (writer process, thread or task gone, store
        closed), or None when the writer is alive. Cheap: looks at local state only."""

    @abc.abstractmethod
    async def schema_version(self) -> int:
        """The newest schema migration applied to the database (a query: it also shows that
        the database answers)."""

    # -- export and import (rows as ``store/dump.py`` defines them)
    @abc.abstractmethod
    def snapshot(
        self, tables: Sequence[str], batch_size: int = 1000
    ) -> AsyncIterator[tuple[str, builtins.list[tuple[Any, ...]]]]:
        """``(table, rows)`` batches of every row of ``tables``, all from one consistent
        snapshot taken while writes go on, streamed (memory does not grow with the data)."""

    @abc.abstractmethod
    async def load(self, table: str, rows: Sequence[tuple[Any, ...]]) -> int:
        """Insert dumped rows as they are (versions, timestamps, TTLs, event ids kept),
        leaving rows already present alone; returns how many were new."""

    # -- vectors
    @property
    def vector_mode(self) -> str:
        """How vector searches are answered (exact in memory, pgvector HNSW...); logged at start."""
        return self._vectors.mode if self._vectors is not None else "unavailable"

    @abc.abstractmethod
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
        """Best-first nearest neighbours of ``query`` within one scope id."""

    # -- control plane (nodes, executions, workflows)
    @abc.abstractmethod
    async def put_node(self, node_id: str, info: dict[str, Any]) -> None: ...

    @abc.abstractmethod
    async def get_nodes(self) -> builtins.list[dict[str, Any]]: ...

    @abc.abstractmethod
    async def put_execution(self, execution: dict[str, Any]) -> None:
        """Insert or update an execution row (keyed by ``execution_id``)."""

    @abc.abstractmethod
    async def finish_execution(self, execution: dict[str, Any]) -> bool:
        """Store an ended execution unless its row has ended already (the first outcome
        stands); True when this one was stored."""

    @abc.abstractmethod
    async def get_execution(self, execution_id: str) -> dict[str, Any] | None:
        """The execution row stored under ``execution_id``, or None."""

    @abc.abstractmethod
    async def get_workflow(self, workflow_id: str) -> dict[str, Any] | None:
        """``{"workflow_id", "status", "root_execution_id", "executions": [...], ...}``."""

    @abc.abstractmethod
    async def put_workflow(self, workflow: dict[str, Any]) -> None: ...


def resolution_chain(
    workflow_id: str | None, session_id: str | None, actor_id: str | None
) -> list[ScopeRef]:
    """The scopes an unscoped read searches, in order, skipping absent ids."""
    chain: list[ScopeRef] = []
    if workflow_id:
        chain.append(("workflow", workflow_id))
    if session_id:
        chain.append(("session", session_id))
    if actor_id:
        chain.append(("actor", actor_id))
    chain.append(("global", GLOBAL_SCOPE_ID))
    return chain


def write_target(workflow_id: str | None, session_id: str | None, actor_id: str | None) -> ScopeRef:
    """The scope an unscoped write (or delete, or vector call) uses."""
    return resolution_chain(workflow_id, session_id, actor_id)[0]
