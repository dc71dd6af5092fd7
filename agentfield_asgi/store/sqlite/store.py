"""Embedded backend: one SQLite file in WAL mode.

* Writes go to one writer that owns the only write connection: it commits every
  unit queued since its last commit as one transaction (a failing unit drops out
  alone, :func:`~.sqlite_writer.commit_group`) and, with ``synchronous=FULL`` (the
  default), the WAL is fsynced before anyone is answered, so every acknowledged write
  is on disk and no writer ever sees "database is locked". The writer is a process
  of its own (:mod:`.writer_process`, the default) or a thread of this one
  (:class:`~.sqlite_writer.GroupWriter`).
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
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from functools import partial
from typing import Any

from databases import Database

from ...codec import now_us
from ...errors import StorageUnavailable
from ..base import ClearOp, Event, EventWatcher, Record, ScopeRef, Store, WriteOp
from ..dump import DumpRow
from ..planning import POINT_OPS
from ..schema import migrate
from ..sql import SQLITE
from ..sql_reads import SQLReads
from ..timing import GroupTiming
from .dump import sqlite_load, sqlite_snapshot
from .read_cache import MISS, ReadCache
from .writer import (
    GroupWriter,
    Unit,
    WriteCall,
    compact_events,
    connect,
    finish_execution,
    put_execution,
    put_json,
)
from .writer_process import ProcessWriter

log = logging.getLogger("agentfield_asgi.store")

WRITERS = ("process", "thread")


def _make_parent_dir(path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)


class SQLiteStore(SQLReads, Store):
    """Embedded storage in one SQLite file. See the module docstring.

    ``synchronous``: ``FULL`` (default), ``EXTRA``, ``NORMAL`` or ``OFF``, as SQLite's
    pragma (with the writer thread, ``FULL`` is made durable by its syncer).
    ``writer``: ``process`` (default) or ``thread``, where the writes are made.
    """

    kind = "sqlite"
    dialect = SQLITE

    def __init__(self, path: str, *, synchronous: str = "FULL", writer: str = "process") -> None:
        if synchronous.upper() not in ("FULL", "NORMAL", "EXTRA", "OFF"):
            raise ValueError(f"unknown synchronous mode {synchronous!r}")
        if writer not in WRITERS:
            raise ValueError(f"unknown writer {writer!r}: one of {', '.join(WRITERS)}")
        self.path = path
        self.url = f"sqlite:///{path}"
        self.synchronous = synchronous.upper()
        self.writer = writer
        self._writer: GroupWriter | ProcessWriter | None = None
        self._reader: sqlite3.Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watchers: list[EventWatcher] = []
        self._cache = ReadCache()

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
        loop = self._loop = asyncio.get_running_loop()
        self._reader = connect(self.path, self.synchronous, readonly=True)
        if self.writer == "process":
            writer = ProcessWriter(self.path, self.synchronous, self._deliver, self._republish)
            writer.last_event_id = await self.last_event_id()
            await writer.start()
            self._writer = writer
        else:

            def deliver(group: list[Unit], commit: float | None, fsync: float | None) -> None:
                # On the writer or syncer thread.
                loop.call_soon_threadsafe(self._deliver, group, commit, fsync)

            thread = GroupWriter(self.path, self.synchronous, deliver)
            await asyncio.to_thread(thread.start)
            self._writer = thread
        from .vectors import SQLiteVectors  # numpy: imported once a store opens

        self._vectors = SQLiteVectors(self.path)

    async def close(self) -> None:
        writer, self._writer = self._writer, None
        if isinstance(writer, ProcessWriter):
            await writer.stop()
        elif writer is not None:
            await asyncio.to_thread(writer.stop)
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._vectors is not None:
            self._vectors.close()

    def writer_problem(self) -> str | None:
        if self._writer is None:
            return "the store is not open"
        return self._writer.problem()

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
        return await self._submit(  # type: ignore[no-any-return]
            partial(compact_events, max_age_seconds=max_age_seconds, max_events=max_events)
        )

    # ------------------------------------------------------------ export and import
    async def snapshot(
        self, tables: Sequence[str], batch_size: int = 1000
    ) -> AsyncIterator[tuple[str, list[DumpRow]]]:
        conn = await asyncio.to_thread(connect, self.path, self.synchronous, readonly=True)
        try:
            async for item in sqlite_snapshot(conn, tables, batch_size):
                yield item
        finally:
            conn.close()

    async def load(self, table: str, rows: Sequence[DumpRow]) -> int:
        return await self._submit(partial(sqlite_load, table=table, rows=list(rows)))  # type: ignore[no-any-return]

    # ------------------------------------------------------------ control plane
    async def put_node(self, node_id: str, info: dict[str, Any]) -> None:
        await self._put_json("nodes", "node_id", node_id, info)

    async def put_execution(self, execution: dict[str, Any]) -> None:
        await self._submit(partial(put_execution, execution=execution))

    async def finish_execution(self, execution: dict[str, Any]) -> bool:
        return bool(await self._submit(partial(finish_execution, execution=execution)))

    async def put_workflow(self, workflow: dict[str, Any]) -> None:
        await self._put_json("workflows", "workflow_id", workflow["workflow_id"], workflow)

    async def _put_json(self, table: str, id_col: str, id_value: str, info: dict[str, Any]) -> None:
        await self._submit(
            partial(put_json, table=table, id_col=id_col, id_value=id_value, info=info)
        )

    # ------------------------------------------------------------ writes
    async def write(self, ops: Sequence[WriteOp]) -> list[Any]:
        return await self._submit(ops)

    async def _submit(self, work: Sequence[WriteOp] | WriteCall) -> Any:
        if self._writer is None or self._loop is None:
            raise StorageUnavailable("store is not open")
        future: asyncio.Future[Any] = self._loop.create_future()
        self._writer.submit(Unit(work, future, submitted=time.perf_counter()))
        # Shield: a caller that goes away must not cancel a write already queued.
        return await asyncio.shield(future)

    def _deliver(
        self, group: list[Unit], commit_seconds: float | None, fsync_seconds: float | None
    ) -> None:
        """On the loop, once the group is durable: answer the callers, then publish the
        events in order."""
        self._forget_written(group)
        events: list[Event] = []
        for unit in group:
            if unit.error is None and self._vectors is not None and not callable(unit.ops):
                try:
                    self._vectors.apply_committed(unit.ops, unit.results)
                except Exception:  # the write stands: answer it; the index reloads
                    log.exception("vector index update failed; reloading scopes on use")
                    self._vectors.forget()
            future = unit.ticket
            if not future.done():
                if unit.error is None:
                    future.set_result(unit.results)
                else:
                    future.set_exception(unit.error)
            events.extend(unit.events)
        if group:
            seconds = time.perf_counter() - group[0].submitted
            self.observe_group(GroupTiming(len(group), seconds, commit_seconds, fsync_seconds))
        self._publish(events)

    def _publish(self, events: list[Event]) -> None:
        if events:
            for watcher in list(self._watchers):
                try:
                    watcher(events)
                except Exception:
                    log.exception("event watcher failed")

    async def _republish(self, after_id: int) -> int:
        """Publish the logged events after ``after_id``: those a writer process that died
        committed without reporting them. Returns the last id published."""
        while events := await self.events_after(after_id, 1000):
            self._cache.clear()
            if self._vectors is not None:
                self._vectors.forget()
            self._publish(events)
            after_id = events[-1].id
        return after_id

    def _forget_written(self, group: list[Unit]) -> None:
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
