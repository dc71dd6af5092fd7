"""PostgreSQL backend: a connection pool, JSONB values, a LISTEN/NOTIFY event feed.

* The schema is created and migrated through ``databases`` (``schema.py``). The hot
  path talks to asyncpg directly (its own pool): ``databases`` adds 35-60 µs to
  every query, more than a point read costs, and cannot run the multi-statement
  group commit below. Pool connections skip asyncpg's reset query on release
  (we never change session state), saving a round trip per query.
* Writes: one writer task per store takes every unit queued since its last
  commit and applies the group at once (see ``group_commit.py``). Sets, incrs and
  deletes of keys and of vectors take two round trips before the callers are
  answered: the writer lock and the touched rows in one call, then one statement
  writing rows + events + NOTIFY that commits by itself. Groups with clears (or
  that both set and delete vectors of one scope) run in ONE transaction of four
  round trips (BEGIN + lock, read, write, COMMIT). Callers are answered after the
  commit. The writer has a connection of its own whose plans are made once and pinned
  to index lookups (:data:`WRITER_SETTINGS`). A unit that fails its own rules
  (``if_version``...)
  is left out alone; if the database rejects the batch, the group is redone unit
  by unit, each in a SAVEPOINT.
* Event ids commit in id order across every instance sharing the database: each
  writer holds one advisory lock from before it reads until after its commit, so
  a reader of ``id > n`` can never later find a smaller id committing
  (FIELD-NOTES: a plain sequence hands out ids at insert time, not commit time).
  The cost is that group commits of all instances are serialized; grouping keeps
  them few.
* Reads (get along the scope chain in one query, list, history...) run on the
  pool and never wait for writers (MVCC). ``feed.py`` delivers every committed
  event, from any instance, to this store's watchers once and in id order.
* Outages: when no connection can be made, a call raises
  :class:`~agentfield_asgi.errors.StorageUnavailable` (503) at once; a pooled
  connection found dead (server restarted, connection killed) is discarded and
  the call tried on another, unless a COMMIT was in flight (then the outcome is
  unknown: 503). The listener reconnects by itself and the feed catches up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import asyncpg
from asyncpg import exceptions as pgerr
from databases import Database

from ...codec import dumps, now_us
from ...errors import INVALID_VALUE, BadRequest, StorageUnavailable
from .. import sql
from ..base import (
    Event,
    EventWatcher,
    Store,
    WriteOp,
)
from ..dump import DumpRow
from ..planning import take_queued
from ..schema import migrate
from ..sql import POSTGRES
from ..sql_reads import SQLReads
from ..timing import GroupTiming
from .connections import (
    LOST,
    UNAVAILABLE,
    OutcomeUnknown,
    commit,
    discard_if_broken,
    init_connection,
    keep_session,
    plain_url,
    rollback,
    unit_error,
    unlock,
)
from .dump import pg_load, pg_snapshot
from .feed import CHANNEL, EventFeed
from .group_commit import (
    BEGIN_LOCKED,
    NOTIFY_SQL,
    Batch,
    Unit,
)
from .maintenance import compact_events
from .vectors import PostgresVectors

log = logging.getLogger("agentfield_asgi.store")

T = TypeVar("T")

MAX_GROUP = 1024  # units per group commit
CONNECT_TIMEOUT = 10.0
CLOSE_TIMEOUT = 10.0
APPLICATION_NAME = "agentfield-asgi"
LISTENER_NAME = "agentfield-asgi-listener"

READ_SETTINGS = {"plan_cache_mode": "force_custom_plan"}
"""The pool (reads, and the control plane's and compaction's writes) plans each statement
with its arguments: a cached generic plan made while a table was tiny would go on scanning
it whole as it grows (until the next ANALYZE), which took a fresh database's writes from
6,000/s to 700/s."""

WRITER_SETTINGS = {
    "plan_cache_mode": "force_generic_plan",
    "enable_seqscan": "off",
    "enable_hashjoin": "off",
    "enable_mergejoin": "off",
}
"""The group commit's statements look rows up by key (or by scope), so the right plan never
depends on the arguments or the table's size: index lookups in nested loops. Pinned to that
shape, a plan is made once per connection; planning each time cost ~0.4 ms of every
group's ~1 ms in the database (pg_stat_statements, 16 clients' sets)."""
WRITER_CONNECTIONS = 1  # groups commit one at a time; a dead one is replaced on next use

LAST_EVENT_SQL = (
    "SELECT GREATEST(COALESCE((SELECT MAX(id) FROM events), 0), "
    "COALESCE((SELECT value FROM meta WHERE name = 'compacted_through'), 0))"
)


class PostgresStore(SQLReads, Store):
    """Storage in a PostgreSQL database. See the module docstring."""

    kind = "postgresql"
    dialect = POSTGRES

    def __init__(
        self, url: str, *, min_size: int = 2, max_size: int = 10, poll_seconds: float = 1.0
    ) -> None:
        """``poll_seconds``: how often the event feed reads the table without a notification."""
        self.url = url
        self._dsn = plain_url(url)
        self.min_size = min_size
        self.max_size = max(max_size, min_size, 1)
        # A call that failed on a dead pooled connection (nothing sent, or a read) is tried
        # again; each failure retires one connection, so this many tries reach a fresh one.
        self._attempts = self.max_size + 1
        self._pool: asyncpg.Pool | None = None
        self._writer_pool: asyncpg.Pool | None = None  # the group commits' connection
        self._queue: asyncio.Queue[Unit | None] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._group_started = 0.0  # when the group being committed began its transaction
        self._closing = False
        self._feed = EventFeed(self.events_after, self._connect_listener, poll_seconds=poll_seconds)
        self._vectors: PostgresVectors | None = None

    @property
    def listener_pid(self) -> int | None:
        """Server pid of the event feed's LISTEN connection, None while it is reconnecting."""
        return self._feed.listener_pid

    # ------------------------------------------------------------ lifecycle
    async def open(self) -> None:
        if self._pool is not None:
            return
        pool: asyncpg.Pool | None = None
        writer_pool: asyncpg.Pool | None = None
        try:
            database = Database(self._dsn)
            await database.connect()
            try:
                await migrate(database, "postgresql")
            finally:
                await database.disconnect()
            pool = await self._create_pool(self.min_size, self.max_size, READ_SETTINGS)
            writer_pool = await self._create_pool(1, WRITER_CONNECTIONS, WRITER_SETTINGS)
            newest = int(await pool.fetchval(LAST_EVENT_SQL))
        except UNAVAILABLE as exc:
            for opened in (pool, writer_pool):
                if opened is not None:
                    opened.terminate()
            raise StorageUnavailable(f"cannot reach PostgreSQL: {exc}") from exc
        self._pool = pool
        self._writer_pool = writer_pool
        self._closing = False
        self._queue = asyncio.Queue()
        self._writer = asyncio.create_task(self._write_loop(), name="agentfield-pg-writer")
        self._feed.start(newest)
        self._vectors = await self._open_vectors()

    async def _open_vectors(self) -> PostgresVectors:
        """pgvector when the server has the extension (or lets us create it), else exact
        search in memory."""
        from .exact import PostgresExactVectors  # numpy: imported once a store opens
        from .pgvector import PgvectorVectors, detect_pgvector

        version, reason = await detect_pgvector(self)
        if version is None:
            return PostgresExactVectors(self, reason)
        vectors = PgvectorVectors(self, version, self.vector_metric)
        await vectors.prepare()
        return vectors

    async def close(self) -> None:
        if self._pool is None:
            return
        self._closing = True
        if self._writer is not None:
            self._queue.put_nowait(None)  # after every unit already queued
            await self._writer
            self._writer = None
        await self._feed.stop()
        if self._vectors is not None:
            self._vectors.close()  # stops its background indexer
        pools = [self._pool, self._writer_pool]
        self._pool = self._writer_pool = None
        for pool in pools:
            if pool is None:
                continue
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await pool.close()
            except TimeoutError:
                pool.terminate()

    def stats(self) -> dict[str, float]:
        out = super().stats()
        if self._pool is not None:
            out["pool_size"] = self._pool.get_size()
            out["pool_idle"] = self._pool.get_idle_size()
        return out

    def writer_problem(self) -> str | None:
        if self._pool is None or self._closing:
            return "the store is not open"
        if self._writer is None or self._writer.done():
            return "the group-commit writer task has ended"
        return None

    async def _create_pool(
        self, min_size: int, max_size: int, settings: dict[str, str]
    ) -> asyncpg.Pool:
        return await asyncpg.create_pool(
            self._dsn,
            min_size=min_size,
            max_size=max_size,
            init=init_connection,
            reset=keep_session,
            timeout=CONNECT_TIMEOUT,
            server_settings={"application_name": APPLICATION_NAME, **settings},
        )

    async def _connect_listener(self) -> asyncpg.Connection:
        return await asyncpg.connect(
            self._dsn, timeout=CONNECT_TIMEOUT, server_settings={"application_name": LISTENER_NAME}
        )

    # ------------------------------------------------------------ database access
    async def _call(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run ``work`` on a pooled connection, mapping failures to the protocol's errors.
        Only for idempotent work: when a pooled connection turns out dead, it is tried again
        (see ``_attempts``); when no connection can be made, it fails at once."""
        for attempt in range(1, self._attempts + 1):
            pool = self._pool
            if pool is None:
                raise StorageUnavailable("store is not open")
            acquired = False
            try:
                async with pool.acquire() as conn, discard_if_broken(conn):
                    acquired = True
                    return await work(conn)
            except UNAVAILABLE as exc:
                if not acquired or attempt == self._attempts:
                    raise StorageUnavailable(f"database unavailable: {exc}") from exc
                await asyncio.sleep(0)  # let the loop notice other connections that died
            except pgerr.DataError as exc:
                raise BadRequest(
                    f"invalid input for the database: {exc}", code=INVALID_VALUE
                ) from exc
        raise AssertionError("unreachable")

    async def _rows(self, query: str, params: Sequence[Any] = ()) -> list[asyncpg.Record]:
        return await self._call(lambda conn: conn.fetch(query, *params))

    async def _execute(self, query: str, params: Sequence[Any] = ()) -> None:
        await self._call(lambda conn: conn.execute(query, *params))

        # ------------------------------------------------------------ events

    def watch(self, watcher: EventWatcher) -> Callable[[], None]:
        return self._feed.watch(watcher)

    async def last_event_id(self) -> int:
        return int(await self._call(lambda conn: conn.fetchval(LAST_EVENT_SQL)))

    async def compact(self, *, max_age_seconds: float | None, max_events: int | None) -> int:
        return await self._call(lambda conn: compact_events(conn, max_age_seconds, max_events))

    # ------------------------------------------------------------ export and import
    def snapshot(
        self, tables: Sequence[str], batch_size: int = 1000
    ) -> AsyncIterator[tuple[str, list[DumpRow]]]:
        if self._pool is None:
            raise StorageUnavailable("store is not open")
        return pg_snapshot(self._pool, tables, batch_size)

    async def load(self, table: str, rows: Sequence[DumpRow]) -> int:
        if self._pool is None:
            raise StorageUnavailable("store is not open")
        try:
            return await pg_load(self._pool, table, rows)
        except UNAVAILABLE as exc:
            raise StorageUnavailable(f"database unavailable: {exc}") from exc

    # ------------------------------------------------------------ control plane
    async def put_node(self, node_id: str, info: dict[str, Any]) -> None:
        await self._put_json("nodes", "node_id", node_id, info)

    async def put_execution(self, execution: dict[str, Any]) -> None:
        params = [execution["execution_id"], execution["workflow_id"], dumps(execution), now_us()]
        await self._execute(sql.put_execution_sql(POSTGRES), params)

    async def finish_execution(self, execution: dict[str, Any]) -> bool:
        params = [dumps(execution), now_us(), execution["execution_id"]]
        query = sql.finish_execution_sql(POSTGRES)
        status = await self._call(lambda conn: conn.execute(query, *params))
        return str(status).split()[-1] == "1"

    async def put_workflow(self, workflow: dict[str, Any]) -> None:
        await self._put_json("workflows", "workflow_id", workflow["workflow_id"], workflow)

    async def _put_json(self, table: str, id_col: str, id_value: str, info: dict[str, Any]) -> None:
        query = sql.put_json_sql(POSTGRES, table, id_col)
        await self._execute(query, [id_value, dumps(info), now_us()])

    # ------------------------------------------------------------ writes
    async def write(self, ops: Sequence[WriteOp]) -> list[Any]:
        if self._writer is None or self._closing:
            raise StorageUnavailable("store is not open")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(Unit(ops, future, submitted=time.perf_counter()))
        # Shield: a caller that goes away must not cancel a write already queued.
        return await asyncio.shield(future)

    async def _write_loop(self) -> None:
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is None:
                break
            group, stopping = take_queued(self._queue, first, MAX_GROUP)
            with self._feed.writing():
                if not await self._commit_group(group):
                    self._answer(group)  # with the errors _fail set
                    self._feed.wake()  # the outcome may be unknown: read what is there

    def _finish(self, group: list[Unit], events: list[Event]) -> None:
        """Right after the commit: answer the callers, then hand the group's events to
        the feed (which reads them back only when they do not directly follow what it
        delivered)."""
        self._answer(group)
        finished = time.perf_counter()
        # The commit's time is the client's view of the transaction (its round trips and
        # COMMIT); the server flushes its WAL inside COMMIT, so no fsync time is known.
        commit_seconds = finished - self._group_started
        self.observe_group(GroupTiming(len(group), finished - group[0].submitted, commit_seconds))
        if not self._feed.deliver_own(events):
            self._feed.wake()

    async def _commit_group(self, group: list[Unit]) -> bool:
        """Commit ``group`` and :meth:`_finish` it; False when it failed (``_fail``)."""
        for attempt in range(1, self._attempts + 1):
            acquired = False
            try:
                pool = self._writer_pool
                if pool is None:
                    raise StorageUnavailable("store is not open")
                async with pool.acquire() as conn, discard_if_broken(conn):
                    acquired = True
                    self._group_started = time.perf_counter()  # read by _finish
                    if Batch.lockable(group, self._vectors):
                        done = await self._commit_points(conn, group)
                    else:
                        done = await self._commit_together(conn, group)
                    if not done:
                        await self._commit_one_by_one(conn, group)
                return True
            except OutcomeUnknown as exc:
                message = f"connection lost during COMMIT; the write may have been applied: {exc}"
                self._fail(group, StorageUnavailable(message))
                return False
            except UNAVAILABLE as exc:
                # Nothing was committed. If a pooled connection died (a restarted server),
                # try again on another one; if none can be made, fail at once.
                for unit in group:
                    unit.reset()
                if not acquired or attempt == self._attempts:
                    self._fail(group, StorageUnavailable(f"database unavailable: {exc}"))
                    return False
                await asyncio.sleep(0)  # let the loop notice other connections that died
            except Exception as exc:
                log.exception("postgres group commit failed")
                self._fail(group, exc)
                return False
        return False

    async def _commit_points(self, conn: asyncpg.Connection, group: list[Unit]) -> bool:
        """Sets, incrs and deletes (of keys or vectors) in two round trips: the writer lock
        (held by the session) and the touched rows in one call, then one statement writing
        rows, events and NOTIFY that commits by itself. Callers are answered at once; the
        lock is released after, so the next group waits one round trip but no caller does.
        False (nothing committed) when the database rejected the write."""
        try:
            batch = await Batch.lock_and_read(conn, group, self._vectors)
            for unit in group:
                await batch.add(unit, now_us())
            events: list[Event] = []
            if not batch.empty:
                try:
                    events = await batch.write(conn, notify=True)
                except UNAVAILABLE as exc:  # the statement's COMMIT may have happened
                    raise OutcomeUnknown(str(exc)) from exc
            self._finish(group, events)  # now, not after the unlock
            return True
        except asyncpg.PostgresError as exc:
            log.info("group commit rejected (%s); retrying its units one by one", exc)
            for unit in group:
                unit.reset()
            return False
        finally:
            await unlock(conn)

    async def _commit_together(self, conn: asyncpg.Connection, group: list[Unit]) -> bool:
        """The fast path: the whole group in one statement. False (rolled back) when the
        database rejected it or a failed unit needs a savepoint to be undone."""
        await conn.execute(BEGIN_LOCKED)
        try:
            batch = await Batch.prefetch(conn, group, self._vectors)
            for unit in group:
                await batch.add(unit, now_us())
            if any(u.error is not None and u.touched_db for u in group):
                await rollback(conn)
            else:
                events = await batch.write(conn, notify=True)
                await commit(conn)
                self._finish(group, events)
                return True
        except LOST:
            await rollback(conn)
            raise
        except asyncpg.PostgresError as exc:
            log.info("group commit rejected (%s); retrying its units one by one", exc)
            await rollback(conn)
        except BaseException:
            await rollback(conn)
            raise
        for unit in group:
            unit.reset()
        return False

    async def _commit_one_by_one(self, conn: asyncpg.Connection, group: list[Unit]) -> None:
        """The slow path: each unit in its own SAVEPOINT, so a rejected one rolls back alone."""
        await conn.execute(BEGIN_LOCKED)
        try:
            events: list[Event] = []
            for unit in group:
                await conn.execute("SAVEPOINT unit")
                written: list[Event] = []
                try:
                    batch = await Batch.prefetch(conn, [unit], self._vectors)
                    await batch.add(unit, now_us())
                    if unit.error is None:
                        written = await batch.write(conn, notify=False)
                except UNAVAILABLE:
                    raise
                except asyncpg.PostgresError as exc:
                    unit.error, unit.results = unit_error(exc), None
                if unit.error is None:
                    await conn.execute("RELEASE SAVEPOINT unit")
                    events += written
                else:
                    await conn.execute("ROLLBACK TO SAVEPOINT unit; RELEASE SAVEPOINT unit")
            if events:
                await conn.execute(NOTIFY_SQL, CHANNEL, str(events[-1].id))
            await commit(conn)
            self._finish(group, events)
        except BaseException:
            await rollback(conn)
            raise

    @staticmethod
    def _fail(group: list[Unit], error: BaseException) -> None:
        for unit in group:
            unit.results, unit.error = None, error

    def _answer(self, group: list[Unit]) -> None:
        """After COMMIT: update the vector index, then answer each caller (once)."""
        for unit in group:
            if unit.future.done():  # answered already (only this method resolves it)
                continue
            if unit.error is None and self._vectors is not None:
                try:
                    self._vectors.apply_committed(unit.ops, unit.results or [])
                except Exception:  # the writer task must survive; the rows are committed
                    log.exception("vector index update failed")
            if unit.error is None:
                unit.future.set_result(unit.results)
            else:
                unit.future.set_exception(unit.error)
