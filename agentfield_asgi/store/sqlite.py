"""Embedded backend: one SQLite file in WAL mode.

* Writes go to one writer thread that owns the only write connection. It takes
  every unit queued since its last commit, decides them together (a failing unit
  drops out alone) and COMMITs them as one transaction. With ``synchronous=FULL``
  (the default) a syncer thread then fsyncs the WAL (:mod:`.wal_sync`) while the
  writer goes on with the next group; callers are answered only after that fsync,
  so every acknowledged write is on disk, and no writer ever sees "database is
  locked".
* Point reads run directly on the event loop on a read-only WAL connection:
  handing a 20 µs lookup to a thread costs about three times the lookup.
* Events are handed to watchers after commit, in id order (one writer commits in
  id order by construction).

The schema is created through ``databases`` (see ``schema.py``); the hot path
uses the stdlib ``sqlite3`` driver that ``aiosqlite`` wraps, for the reasons above.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from databases import Database

from ..codec import dumps, now_us
from ..errors import StorageUnavailable
from ..patterns import compile_pattern
from . import semantics, sql
from .base import (
    ClearOp,
    Event,
    EventWatcher,
    Record,
    ScopeRef,
    Store,
    VectorDeleteOp,
    VectorSetOp,
    WriteOp,
)
from .planning import POINT_OPS, Key, Plan, is_point_unit, take_queued, touched_keys
from .read_cache import MISS, ReadCache
from .schema import migrate
from .sql import EVENT_COLS, RECORD_COLS, SQLITE, record_from_row
from .sql_reads import SQLReads
from .wal_sync import WalSyncer

log = logging.getLogger("agentfield_asgi.store")

MAX_GROUP = 1024  # units per group commit


def _regexp(pattern: str, value: str) -> bool:
    return compile_pattern(pattern).match(value) is not None


def _make_parent_dir(path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)


def _connect(path: str, synchronous: str, *, readonly: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 10000")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    if readonly:
        conn.execute("PRAGMA query_only = 1")
    conn.create_function("glob_match", 2, _regexp, deterministic=True)
    return conn


def _meta_json(metadata: dict[str, Any] | None) -> str | None:
    return dumps(metadata).decode() if metadata else None


@lru_cache(maxsize=32)
def _prefetch_sql(n: int) -> str:
    keys = ", ".join(["(?, ?, ?)"] * n)
    return (
        f"SELECT {', '.join('m.' + c for c in RECORD_COLS.split(', '))} "
        f"FROM (VALUES {keys}) AS k JOIN memory AS m "
        "ON m.scope = k.column1 AND m.scope_id = k.column2 AND m.key = k.column3"
    )


_UPSERT_SQL = f"INSERT OR REPLACE INTO memory ({RECORD_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
_DELETE_SQL = "DELETE FROM memory WHERE scope = ? AND scope_id = ? AND key = ?"
_INSERT_EVENT_SQL = f"INSERT INTO events ({EVENT_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
_NEXT_EVENT_ID_SQL = (
    "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0), "
    "coalesce((SELECT max(id) FROM events), 0)) + 1"
)


def _record_params(r: Record) -> tuple[Any, ...]:
    return (
        r.scope,
        r.scope_id,
        r.key,
        r.data_json.decode(),
        r.created_us,
        r.updated_us,
        r.version,
        _meta_json(r.metadata),
        r.expires_us,
    )


def _text(value: bytes | None) -> str | None:
    return value.decode() if value is not None else None


def _event_params(e: Event) -> tuple[Any, ...]:
    return (
        e.id,
        e.ts_us,
        e.scope,
        e.scope_id,
        e.key,
        e.action,
        _text(e.data_json),
        _text(e.previous_json),
        _meta_json(e.metadata),
    )


@dataclass(slots=True)
class _Unit:
    ops: Sequence[WriteOp] | Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any]
    results: Any = None
    error: BaseException | None = None
    events: list[Event] = field(default_factory=list)


class SQLiteStore(SQLReads, Store):
    """Embedded storage in one SQLite file. See the module docstring."""

    kind = "sqlite"
    dialect = SQLITE

    def __init__(self, path: str, *, synchronous: str = "FULL") -> None:
        if synchronous.upper() not in ("FULL", "NORMAL", "EXTRA", "OFF"):
            raise ValueError(f"unknown synchronous mode {synchronous!r}")
        self.path = path
        self.url = f"sqlite:///{path}"
        self.synchronous = synchronous.upper()
        self._queue: queue.SimpleQueue[_Unit | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._reader: sqlite3.Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watchers: list[EventWatcher] = []
        self._vectors: Any = None  # VectorIndex, attached by store/vectors.py
        self._syncer: WalSyncer[list[_Unit]] | None = None
        self._cache = ReadCache()
        self._unsynced: OSError | None = None  # an fsync failed: refuse writes from then on

    # ------------------------------------------------------------ lifecycle
    async def open(self) -> None:
        await asyncio.to_thread(_make_parent_dir, self.path)
        database = Database(f"sqlite+aiosqlite:///{self.path}")
        await database.connect()
        try:
            async with database.connection() as conn:
                await conn.execute("PRAGMA journal_mode = WAL")
            await migrate(database, "sqlite")
        finally:
            await database.disconnect()
        self._loop = asyncio.get_running_loop()
        self._reader = _connect(self.path, self.synchronous, readonly=True)
        if self.synchronous == "FULL":  # made durable by the syncer, off the writer thread
            writer = _connect(self.path, "NORMAL", readonly=False)
            writer.execute("SELECT count(*) FROM sqlite_master").fetchone()  # opens the WAL
            syncer = WalSyncer(self.path + "-wal", self._synced)
            syncer.sync()  # the WAL file exists now, and stays while the connections are open
            syncer.start()
            self._syncer = syncer
        else:
            writer = _connect(self.path, self.synchronous, readonly=False)
        self._thread = threading.Thread(
            target=self._writer_loop, args=(writer,), name="agentfield-sqlite-writer", daemon=True
        )
        self._thread.start()
        from .vectors import attach_sqlite_vectors

        await attach_sqlite_vectors(self)

    async def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        if self._syncer is not None:
            await asyncio.to_thread(self._syncer.stop)
            self._syncer = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._vectors is not None:
            self._vectors.close()

    # ------------------------------------------------------------ reads (see SQLReads)
    async def get(self, key: str, chain: Sequence[ScopeRef]) -> Record | None:
        """Remembered answers first (:mod:`.read_cache`), else SQLite."""
        scopes = tuple(chain)
        known = self._cache.get(key, scopes, now_us())
        if known is not MISS:
            return known  # type: ignore[return-value]
        generation = self._cache.generation
        record = await super().get(key, scopes)
        self._cache.put(key, scopes, record, generation)
        return record

    async def _rows(self, query: str, params: Sequence[Any] = ()) -> list[Any]:
        return self._read(query, params)

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        if self._reader is None:
            raise StorageUnavailable("store is not open")
        try:
            return self._reader.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            raise StorageUnavailable(f"database error: {exc}") from exc

    # ------------------------------------------------------------ events
    def watch(self, watcher: EventWatcher) -> Callable[[], None]:
        self._watchers.append(watcher)
        return lambda: self._watchers.remove(watcher) if watcher in self._watchers else None

    async def last_event_id(self) -> int:
        rows = self._read("SELECT seq FROM sqlite_sequence WHERE name = 'events'")
        return int(rows[0][0]) if rows else 0

    async def compact(self, *, max_age_seconds: float | None, max_events: int | None) -> int:
        def run(conn: sqlite3.Connection) -> int:
            cutoff = 0
            if max_age_seconds is not None:
                row = conn.execute(
                    sql.COMPACT_BY_AGE_SQL, (now_us() - int(max_age_seconds * 1_000_000),)
                ).fetchone()
                cutoff = max(cutoff, row[0] or 0)
            if max_events is not None:
                row = conn.execute(sql.COMPACT_BY_COUNT_SQL, (max_events,)).fetchone()
                cutoff = max(cutoff, row[0] if row else 0)
            if cutoff <= 0:
                return 0
            removed = conn.execute(sql.COMPACT_DELETE_SQL, (cutoff,)).rowcount
            conn.execute(sql.compacted_through_upsert(SQLITE), (cutoff,))
            return removed

        return await self._submit(run)

    # ------------------------------------------------------------ control plane
    async def put_node(self, node_id: str, info: dict[str, Any]) -> None:
        await self._put_json("nodes", "node_id", node_id, info)

    async def put_execution(self, execution: dict[str, Any]) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                sql.put_execution_sql(SQLITE),
                (
                    execution["execution_id"],
                    execution["workflow_id"],
                    dumps(execution).decode(),
                    now_us(),
                ),
            )

        await self._submit(run)

    async def put_workflow(self, workflow: dict[str, Any]) -> None:
        await self._put_json("workflows", "workflow_id", workflow["workflow_id"], workflow)

    async def _put_json(self, table: str, id_col: str, id_value: str, info: dict[str, Any]) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                sql.put_json_sql(SQLITE, table, id_col), (id_value, dumps(info).decode(), now_us())
            )

        await self._submit(run)

    # ------------------------------------------------------------ writes
    async def write(self, ops: Sequence[WriteOp]) -> list[Any]:
        return await self._submit(ops)

    async def _submit(self, work: Sequence[WriteOp] | Callable[[sqlite3.Connection], Any]) -> Any:
        if self._thread is None or self._loop is None:
            raise StorageUnavailable("store is not open")
        if self._unsynced is not None:
            raise StorageUnavailable(
                f"the database file could not be synced ({self._unsynced}); restart the server"
            )
        future: asyncio.Future[Any] = self._loop.create_future()
        self._queue.put(_Unit(work, future))
        # Shield: a caller that goes away must not cancel a write already queued.
        return await asyncio.shield(future)

    def _writer_loop(self, conn: sqlite3.Connection) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            group, stopping = take_queued(self._queue, first, MAX_GROUP)
            self._commit_group(conn, group)
        conn.close()

    def _commit_group(self, conn: sqlite3.Connection, group: list[_Unit]) -> None:
        planned = all(not callable(u.ops) and is_point_unit(u.ops) for u in group)
        if not (planned and self._commit_planned(conn, group)):
            self._commit_one_by_one(conn, group)
        if self._syncer is not None:
            self._syncer.submit(group)
        else:
            self._loop.call_soon_threadsafe(self._deliver, group)  # type: ignore[union-attr]

    def _synced(self, groups: list[list[_Unit]], error: OSError | None) -> None:
        """On the syncer thread: the groups' commits are durable (or, with ``error``,
        not known to be: their callers get the error, and writes stop)."""
        if error is not None:
            self._unsynced = error
            failure = StorageUnavailable(f"could not sync the database file: {error}")
            for group in groups:
                for unit in group:
                    unit.results, unit.error, unit.events = None, failure, []
        self._loop.call_soon_threadsafe(self._deliver_groups, groups)  # type: ignore[union-attr]

    def _deliver_groups(self, groups: list[list[_Unit]]) -> None:
        for group in groups:
            self._deliver(group)

    def _commit_planned(self, conn: sqlite3.Connection, group: list[_Unit]) -> bool:
        """The fast path for sets, incrs and deletes: every touched row read in one query,
        each unit decided in memory (see :mod:`.planning`), rows and events written with
        one statement each. False (rolled back) when SQLite rejected it."""
        try:
            conn.execute("BEGIN IMMEDIATE")
            plan = Plan(self._prefetch(conn, touched_keys(u.ops for u in group)))  # type: ignore[misc]
            decided: list[tuple[_Unit, int]] = []
            for unit in group:
                try:
                    unit.results, unit_events = plan.unit(unit.ops, now_us())  # type: ignore[arg-type]
                except Exception as exc:  # the unit's own failure (VersionConflict, ...)
                    unit.error = exc
                    continue
                decided.append((unit, len(unit_events)))
            events = self._write_plan(conn, plan)
            conn.execute("COMMIT")
        except Exception as exc:  # sqlite3.Error, or a row it cannot take: isolate the unit
            log.info("group commit rejected (%s); retrying its units one by one", exc)
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for unit in group:
                unit.results, unit.error = None, None
            return False
        at = 0
        for unit, count in decided:
            unit.events, at = events[at : at + count], at + count
        return True

    def _commit_one_by_one(self, conn: sqlite3.Connection, group: list[_Unit]) -> None:
        """Each unit in its own SAVEPOINT, so a failing one rolls back alone."""
        try:
            conn.execute("BEGIN IMMEDIATE")
            for unit in group:
                conn.execute("SAVEPOINT unit")
                try:
                    if callable(unit.ops):
                        unit.results = unit.ops(conn)
                    else:
                        ts = now_us()
                        unit.results = [self._apply(conn, op, ts, unit.events) for op in unit.ops]
                    conn.execute("RELEASE unit")
                except Exception as exc:
                    conn.execute("ROLLBACK TO unit")
                    conn.execute("RELEASE unit")
                    unit.error = exc
                    unit.events = []
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            log.error("sqlite group commit failed: %s", exc)
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for unit in group:
                unit.error = StorageUnavailable(f"database write failed: {exc}")
                unit.events = []

    def _deliver(self, group: list[_Unit]) -> None:
        """On the loop, after COMMIT: answer the callers, then publish the events in order."""
        self._forget_written(group)
        events: list[Event] = []
        for unit in group:
            if unit.error is None and self._vectors is not None and not callable(unit.ops):
                self._vectors.apply_committed(unit.ops, unit.results)
            if not unit.future.done():
                if unit.error is None:
                    unit.future.set_result(unit.results)
                else:
                    unit.future.set_exception(unit.error)
            events.extend(unit.events)
        if events:
            for watcher in list(self._watchers):
                try:
                    watcher(events)
                except Exception:
                    log.exception("event watcher failed")

    def _forget_written(self, group: list[_Unit]) -> None:
        """Drop remembered reads of the keys ``group`` may have changed (all of them for
        a clear or a callable, which may write any row)."""
        keys: list[str] = []
        for unit in group:
            if callable(unit.ops):
                self._cache.clear()
                return
            for op in unit.ops:
                if isinstance(op, ClearOp):
                    self._cache.clear()
                    return
                if isinstance(op, POINT_OPS):
                    keys.append(op.key)
        self._cache.forget(keys)

    # Runs on the writer thread, inside the group's transaction.
    def _apply(self, conn: sqlite3.Connection, op: WriteOp, ts: int, events: list[Event]) -> Any:
        if isinstance(op, POINT_OPS):
            plan = Plan(self._prefetch(conn, [(op.scope, op.scope_id, op.key)]))
            (result,), _ = plan.unit([op], ts)
            events.extend(self._write_plan(conn, plan))
            return result
        if isinstance(op, ClearOp):
            rows = conn.execute(
                f"SELECT {RECORD_COLS} FROM memory WHERE scope = ? AND scope_id = ? ORDER BY key",
                (op.scope, op.scope_id),
            ).fetchall()
            conn.execute(
                "DELETE FROM memory WHERE scope = ? AND scope_id = ?", (op.scope, op.scope_id)
            )
            count = 0
            for record in map(record_from_row, rows):
                count += semantics.is_live(record, ts)
                self._log(
                    conn,
                    ts,
                    op.scope,
                    op.scope_id,
                    record.key,
                    "delete",
                    None,
                    record.data_json,
                    semantics.removal_metadata(op.event_metadata, record, ts),
                    events,
                )
            if self._vectors is not None:
                self._vectors.clear_in_tx(conn, op, ts, events, self._log)
            return count
        if isinstance(op, VectorSetOp | VectorDeleteOp):
            return self._vectors.apply_in_tx(conn, op, ts, events, self._log)
        raise TypeError(f"unknown op {op!r}")

    @staticmethod
    def _prefetch(conn: sqlite3.Connection, keys: Sequence[Key]) -> dict[Key, Record | None]:
        """The stored rows of ``keys`` (live or expired), in one query per 300 keys."""
        state: dict[Key, Record | None] = {}
        for at in range(0, len(keys), 300):
            chunk = keys[at : at + 300]
            params = [part for key in chunk for part in key]
            for row in conn.execute(_prefetch_sql(len(chunk)), params):
                record = record_from_row(row)
                state[(record.scope, record.scope_id, record.key)] = record
        return state

    @staticmethod
    def _write_plan(conn: sqlite3.Connection, plan: Plan) -> list[Event]:
        """Write a plan's rows and events; the events, with the ids they were given."""
        upserts, gone = plan.rows()
        if upserts:
            conn.executemany(_UPSERT_SQL, map(_record_params, upserts))
        if gone:
            conn.executemany(_DELETE_SQL, gone)
        if not plan.events:
            return []
        # One writer holds the write lock, so it numbers the events itself and inserts
        # them in one statement instead of one INSERT ... RETURNING each.
        first = conn.execute(_NEXT_EVENT_ID_SQL).fetchone()[0]
        events = [
            Event(first + i, ts, scope, scope_id, key, action, data, previous, dict(meta))
            for i, (ts, scope, scope_id, key, action, data, previous, meta) in enumerate(
                plan.events
            )
        ]
        conn.executemany(_INSERT_EVENT_SQL, map(_event_params, events))
        return events

    @staticmethod
    def _log(
        conn: sqlite3.Connection,
        ts: int,
        scope: str,
        scope_id: str,
        key: str,
        action: str,
        data: bytes | None,
        previous: bytes | None,
        metadata: dict[str, Any],
        events: list[Event],
    ) -> None:
        row = conn.execute(
            "INSERT INTO events (ts_us, scope, scope_id, key, action, data, previous, metadata) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (
                ts,
                scope,
                scope_id,
                key,
                action,
                _text(data),
                _text(previous),
                _meta_json(metadata),
            ),
        ).fetchone()
        events.append(
            Event(row[0], ts, scope, scope_id, key, action, data, previous, dict(metadata))
        )
