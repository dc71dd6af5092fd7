"""The writing half of the embedded backend: the one write connection and its thread.

A :class:`GroupWriter` owns the only connection that writes. Its thread takes every
unit queued since its last commit, decides them together (a failing unit drops out
alone) and COMMITs them as one transaction. With ``synchronous=FULL`` (the default)
a syncer thread then fsyncs the WAL (:mod:`.wal_sync`) while the writer goes on with
the next group. ``deliver(group, commit_seconds, fsync_seconds)`` is called, from one
of those threads, once the group is durable (or has failed): nothing is answered before.

It runs wherever the write connection lives: inside the server's process, or in a
writer process of its own (:mod:`.writer_process`), which keeps its Python work off
the server's GIL. Only this module imports what the writer process needs, so it
starts quickly: no web stack, no numpy until a vector is written.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from ...codec import dumps, now_us
from ...errors import StorageUnavailable
from ...patterns import compile_pattern
from .. import semantics, sql
from ..base import ClearOp, Event, Record, VectorDeleteOp, VectorSetOp, WriteOp
from ..planning import (
    POINT_OPS,
    Key,
    Plan,
    is_point_unit,
    state_of,
    take_queued,
    touched_keys,
)
from ..sql import EVENT_COLS, RECORD_COLS, SQLITE, record_from_row
from .wal_sync import WalSyncer

log = logging.getLogger("agentfield_asgi.store")

MAX_GROUP = 1024  # units per group commit

WriteCall = Callable[[sqlite3.Connection], Any]
Deliver = Callable[[list["Unit"], float | None, float | None], None]
"""``deliver(group, commit_seconds, fsync_seconds)``: the group's timings, None when not
measured (a unit refused before any commit; no separate fsync)."""
"""Work other than ops, run on the write connection inside the group's transaction. It
must pickle (a module-level function, or a ``functools.partial`` of one) so that it can
reach a writer process."""


@dataclass(slots=True)
class Unit:
    """One caller's writes, committed all or nothing. ``ticket`` is how the submitter
    finds its caller again (a future in process, a number across processes)."""

    ops: Sequence[WriteOp] | WriteCall
    ticket: Any
    results: Any = None
    error: BaseException | None = None
    events: list[Event] = field(default_factory=list)
    submitted: float = 0.0
    """``time.perf_counter()`` when it was submitted (for the write-group metrics)."""


def _regexp(pattern: str, value: str) -> bool:
    return compile_pattern(pattern).match(value) is not None


def connect(path: str, synchronous: str, *, readonly: bool) -> sqlite3.Connection:
    """A connection to the store's file as every part of the backend opens it."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 10000")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    if readonly:
        conn.execute("PRAGMA query_only = 1")
    conn.create_function("glob_match", 2, _regexp, deterministic=True)
    return conn


class GroupWriter:
    """The write connection, its thread and (with ``FULL``) its syncer.

    ``submit(unit)`` from any thread; ``deliver(group, commit_seconds, fsync_seconds)``
    is called on the writer or the syncer thread, in commit order, when the group's
    units are decided and durable.
    """

    def __init__(self, path: str, synchronous: str, deliver: Deliver) -> None:
        self.path = path
        self.synchronous = synchronous
        self._deliver = deliver
        self._queue: queue.SimpleQueue[Unit | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._syncer: WalSyncer[tuple[list[Unit], float]] | None = None
        self._unsynced: OSError | None = None  # an fsync failed: refuse writes from then on

    def start(self) -> None:
        """Open the write connection and start the threads (blocking: a few ms)."""
        if self.synchronous == "FULL":  # made durable by the syncer, off the writer thread
            conn = connect(self.path, "NORMAL", readonly=False)
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # opens the WAL
            syncer = WalSyncer(self.path + "-wal", self._synced)
            syncer.sync()  # the WAL file exists now, and stays while the connections are open
            syncer.start()
            self._syncer = syncer
        else:
            conn = connect(self.path, self.synchronous, readonly=False)
        self._thread = threading.Thread(
            target=self._run, args=(conn,), name="agentfield-sqlite-writer", daemon=True
        )
        self._thread.start()

    def problem(self) -> str | None:
        """Why the writer thread cannot take writes now, or None when it can."""
        if self._thread is None or not self._thread.is_alive():
            return "the SQLite writer thread is not running"
        if self._unsynced is not None:
            return f"the database file could not be synced ({self._unsynced})"
        return None

    def submit(self, unit: Unit) -> None:
        if self._unsynced is not None:
            unit.error = StorageUnavailable(
                f"the database file could not be synced ({self._unsynced}); restart the server"
            )
            self._deliver([unit], None, None)
            return
        self._queue.put(unit)

    def stop(self) -> None:
        """Commit, sync and deliver everything submitted, then end the threads."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        if self._syncer is not None:
            self._syncer.stop()
            self._syncer = None

    # ------------------------------------------------------------ writer thread
    def _run(self, conn: sqlite3.Connection) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            group, stopping = take_queued(self._queue, first, MAX_GROUP)
            self._commit_group(conn, group)
        conn.close()

    def _commit_group(self, conn: sqlite3.Connection, group: list[Unit]) -> None:
        commit_seconds = commit_group(conn, group)
        if self._syncer is not None:
            self._syncer.submit((group, commit_seconds))
        else:  # synchronous=OFF or NORMAL: no fsync to wait for (or measure)
            self._deliver(group, commit_seconds, None)

    def _synced(self, groups: list[tuple[list[Unit], float]], error: OSError | None) -> None:
        """On the syncer thread: the groups' commits are durable (or, with ``error``,
        not known to be: their callers get the error, and writes stop)."""
        syncer = self._syncer
        # One fsync covered all these groups: each is observed with its duration.
        fsync_seconds = syncer.last_seconds if syncer is not None and error is None else None
        if error is not None:
            self._unsynced = error
            failure = StorageUnavailable(f"could not sync the database file: {error}")
            for group, _ in groups:
                for unit in group:
                    unit.results, unit.error, unit.events = None, failure, []
        for group, commit_seconds in groups:
            self._deliver(group, commit_seconds, fsync_seconds)


# ------------------------------------------------------------ committing a group
def commit_group(conn: sqlite3.Connection, group: list[Unit]) -> float:
    """Commit ``group`` as one transaction, filling in each unit's results (or error) and
    events: sets, incrs and deletes decided together in memory, anything else (or a group
    SQLite refused) unit by unit. Returns the seconds it took, BEGIN to COMMIT returned
    (with ``synchronous=FULL`` on this connection, that includes SQLite's fsync)."""
    started = time.perf_counter()
    planned = all(not callable(u.ops) and is_point_unit(u.ops) for u in group)
    if not (planned and _commit_planned(conn, group)):
        _commit_one_by_one(conn, group)
    return time.perf_counter() - started


def _commit_planned(conn: sqlite3.Connection, group: list[Unit]) -> bool:
    """The fast path for sets, incrs and deletes: every touched row read in one query,
    each unit decided in memory (see :mod:`.planning`), rows and events written with
    one statement each. False (rolled back) when SQLite rejected it."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        plan = Plan(_prefetch(conn, touched_keys(u.ops for u in group)))  # type: ignore[misc]
        decided: list[tuple[Unit, int]] = []
        for unit in group:
            try:
                unit.results, unit_events = plan.unit(unit.ops, now_us())  # type: ignore[arg-type]
            except Exception as exc:  # the unit's own failure (VersionConflict, ...)
                unit.error = exc
                continue
            decided.append((unit, len(unit_events)))
        events = _write_plan(conn, plan)
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


def _commit_one_by_one(conn: sqlite3.Connection, group: list[Unit]) -> None:
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
                    unit.results = [_apply(conn, op, ts, unit.events) for op in unit.ops]
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


def _apply(conn: sqlite3.Connection, op: WriteOp, ts: int, events: list[Event]) -> Any:
    if isinstance(op, POINT_OPS):
        plan = Plan(_prefetch(conn, [(op.scope, op.scope_id, op.key)]))
        (result,), _ = plan.unit([op], ts)
        events.extend(_write_plan(conn, plan))
        return result
    if isinstance(op, ClearOp):
        from .vectors import clear_vectors_in_tx

        count = _clear_in_tx(conn, op, ts, events)
        clear_vectors_in_tx(conn, op, ts, events, log_event)
        return count
    if isinstance(op, VectorSetOp | VectorDeleteOp):
        from .vectors import write_vector_in_tx

        return write_vector_in_tx(conn, op, ts, events, log_event)
    raise TypeError(f"unknown op {op!r}")


def _prefetch(conn: sqlite3.Connection, keys: Sequence[Key]) -> dict[Key, Record | None]:
    """The stored rows of ``keys`` (live or expired), in one query per 300 keys."""
    state: dict[Key, Record | None] = {}
    for at in range(0, len(keys), 300):
        chunk = keys[at : at + 300]
        params = [part for key in chunk for part in key]
        rows = conn.execute(_prefetch_sql(len(chunk)), params)
        state.update(state_of(map(record_from_row, rows)))
    return state


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
        for i, (ts, scope, scope_id, key, action, data, previous, meta) in enumerate(plan.events)
    ]
    conn.executemany(_INSERT_EVENT_SQL, map(_event_params, events))
    return events


def _clear_in_tx(conn: sqlite3.Connection, op: ClearOp, ts: int, events: list[Event]) -> int:
    """Remove every record of a scope, one delete event each; how many were live."""
    rows = conn.execute(
        f"SELECT {RECORD_COLS} FROM memory WHERE scope = ? AND scope_id = ? ORDER BY key",
        (op.scope, op.scope_id),
    ).fetchall()
    conn.execute("DELETE FROM memory WHERE scope = ? AND scope_id = ?", (op.scope, op.scope_id))
    count = 0
    for record in map(record_from_row, rows):
        count += semantics.is_live(record, ts)
        log_event(
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
    return count


def log_event(
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
    """Insert one change event (its id from AUTOINCREMENT) and append it to ``events``."""
    row = conn.execute(
        "INSERT INTO events (ts_us, scope, scope_id, key, action, data, previous, metadata) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        (ts, scope, scope_id, key, action, _text(data), _text(previous), _meta_json(metadata)),
    ).fetchone()
    events.append(Event(row[0], ts, scope, scope_id, key, action, data, previous, dict(metadata)))


def is_io_failure(error: BaseException | None) -> bool:
    """Whether ``error`` comes from SQLite failing to read or write the disk (an fsync
    among them). After one, what is on disk is known only after a restart (WAL
    recovery), so writers refuse further writes."""
    cause = error.__cause__ if error is not None else None
    code = getattr(cause, "sqlite_errorcode", None)
    return code is not None and code & 0xFF == sqlite3.SQLITE_IOERR


# ------------------------------------------------------------ write calls (WriteCall)
def compact_events(
    conn: sqlite3.Connection, max_age_seconds: float | None, max_events: int | None
) -> int:
    """Drop events older than ``max_age_seconds`` or beyond the newest ``max_events``."""
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
    removed: int = conn.execute(sql.COMPACT_DELETE_SQL, (cutoff,)).rowcount
    conn.execute(sql.compacted_through_upsert(SQLITE), (cutoff,))
    return removed


def put_json(
    conn: sqlite3.Connection, table: str, id_col: str, id_value: str, info: dict[str, Any]
) -> None:
    """Store a control-plane document (node, workflow) under its id."""
    row = (id_value, dumps(info).decode(), now_us())
    conn.execute(sql.put_json_sql(SQLITE, table, id_col), row)


def put_execution(conn: sqlite3.Connection, execution: dict[str, Any]) -> None:
    """Store an execution record under its id."""
    conn.execute(
        sql.put_execution_sql(SQLITE),
        (execution["execution_id"], execution["workflow_id"], dumps(execution).decode(), now_us()),
    )


def finish_execution(conn: sqlite3.Connection, execution: dict[str, Any]) -> bool:
    """Store an ended execution unless its row has ended already; True when stored."""
    row = (dumps(execution).decode(), now_us(), execution["execution_id"])
    return conn.execute(sql.finish_execution_sql(SQLITE), row).rowcount == 1


# ------------------------------------------------------------ SQL and row encoding
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


def _meta_json(metadata: dict[str, Any] | None) -> str | None:
    return dumps(metadata).decode() if metadata else None


def _text(value: bytes | None) -> str | None:
    return value.decode() if value is not None else None


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
