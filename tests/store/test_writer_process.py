"""The SQLite writer process (store/writer_process.py): what crosses the socket, and what
happens when either side dies."""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import socket
import sqlite3
import sys
import threading
import time
import types
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentfield_asgi.errors import StorageUnavailable, VersionConflict
from agentfield_asgi.store.base import ClearOp, SetOp, VectorSetOp
from agentfield_asgi.store.sqlite import SQLiteStore, writer_process
from agentfield_asgi.store.sqlite.writer import Unit
from agentfield_asgi.store.sqlite.writer_process import ProcessWriter
from agentfield_asgi.testing.servers import ServerProcess, sqlite_writer_pids

from .conftest import WAIT_SECONDS, Eventually, G, put


def _writer(store: SQLiteStore) -> ProcessWriter:
    assert isinstance(store._writer, ProcessWriter)
    return store._writer


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


async def test_writes_are_made_in_another_process(sqlite_store: SQLiteStore) -> None:
    pid = _writer(sqlite_store).pid
    assert pid is not None and pid != os.getpid() and _alive(pid)
    seen: list[Any] = []
    sqlite_store.watch(seen.extend)
    results = await asyncio.gather(*(sqlite_store.set(put(f"k{i}", i)) for i in range(50)))
    assert [r.data for r in results] == list(range(50))
    assert (await sqlite_store.get("k7", [G])).data == 7  # type: ignore[union-attr]
    await asyncio.sleep(0)
    assert sorted(e.key for e in seen) == sorted(f"k{i}" for i in range(50))


async def test_errors_and_results_cross_the_socket_as_they_are(sqlite_store: SQLiteStore) -> None:
    await sqlite_store.set(put("k", 1))
    with pytest.raises(VersionConflict) as caught:
        await sqlite_store.set(SetOp(*G, "k", b"2", if_version=5))
    assert caught.value.status == 412 and caught.value.details["current"]["version"] == 1
    vector = await sqlite_store.write([VectorSetOp(*G, "v", [1.0, 0.0], {"tag": "a"})])
    assert vector[0].metadata == {"tag": "a"}
    assert await sqlite_store.write([ClearOp(*G)]) == [1]
    assert await sqlite_store.compact(max_age_seconds=None, max_events=1) > 0


def _never_run(conn: sqlite3.Connection, **_: Any) -> None:
    raise AssertionError("never run")


async def test_a_write_that_does_not_pickle_fails_alone(sqlite_store: SQLiteStore) -> None:
    outcomes = await asyncio.gather(
        sqlite_store.set(put("before", 1)),
        sqlite_store._submit(partial(_never_run, marker=lambda: None)),
        sqlite_store.set(put("after", 2)),
        return_exceptions=True,
    )
    assert isinstance(outcomes[1], TypeError) and "must pickle" in str(outcomes[1])
    assert [outcomes[0].data, outcomes[2].data] == [1, 2]  # type: ignore[union-attr]


async def test_a_write_the_writer_cannot_read_fails_alone(
    sqlite_store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pickled here by reference to a module that the writer process cannot import: that
    write fails, the writer and the writes around it do not."""
    made_here = types.ModuleType("agentfield_test_only_here")
    exec("def never_run(conn):\n    raise AssertionError('never run')\n", made_here.__dict__)
    monkeypatch.setitem(sys.modules, made_here.__name__, made_here)
    pid = _writer(sqlite_store).pid
    outcomes = await asyncio.gather(
        sqlite_store.set(put("before", 1)),
        sqlite_store._submit(made_here.never_run),
        sqlite_store.set(put("after", 2)),
        return_exceptions=True,
    )
    assert isinstance(outcomes[1], TypeError) and "could not read" in str(outcomes[1])
    assert [outcomes[0].data, outcomes[2].data] == [1, 2]  # type: ignore[union-attr]
    assert _writer(sqlite_store).pid == pid and pid is not None and _alive(pid)


async def test_a_killed_writer_fails_its_writes_in_flight_and_is_replaced(
    sqlite_store: SQLiteStore,
) -> None:
    writer = _writer(sqlite_store)
    old = writer.pid
    assert old is not None
    await sqlite_store.set(put("before", 1))
    os.kill(old, signal.SIGSTOP)  # the write below is sent and waits in the socket
    try:
        pending = asyncio.create_task(sqlite_store.set(put("in-flight", 2)))
        await asyncio.sleep(0.2)
        assert not pending.done()
    finally:
        os.kill(old, signal.SIGKILL)
    with pytest.raises(StorageUnavailable, match="may not have been made"):
        await asyncio.wait_for(pending, WAIT_SECONDS)
    # A new writer takes the next writes; the old one's acknowledged write is there.
    record = await asyncio.wait_for(sqlite_store.set(put("after", 3)), WAIT_SECONDS)
    assert record.data == 3 and writer.pid not in (None, old)
    assert (await sqlite_store.get("before", [G])).data == 1  # type: ignore[union-attr]


async def test_events_a_dead_writer_committed_unreported_are_published(
    sqlite_store: SQLiteStore, eventually: Eventually
) -> None:
    """What a writer commits and dies before reporting is in the log: the replacement's
    start publishes it, after the last event this server delivered and before new ones."""
    writer = _writer(sqlite_store)
    await sqlite_store.set(put("a", 1))
    seen: list[Any] = []
    sqlite_store.watch(seen.extend)
    old = writer.pid
    assert old is not None
    os.kill(old, signal.SIGSTOP)
    # As if the stopped writer had committed this and died before answering.
    conn = sqlite3.connect(sqlite_store.path, isolation_level=None)
    try:
        conn.execute(
            "INSERT INTO memory (scope, scope_id, key, value, created_us, updated_us, version) "
            "VALUES ('global', 'global', 'unreported', '5', 1, 1, 1)"
        )
        conn.execute(
            "INSERT INTO events (ts_us, scope, scope_id, key, action, data) "
            "VALUES (1, 'global', 'global', 'unreported', 'set', '5')"
        )
    finally:
        conn.close()
    os.kill(old, signal.SIGKILL)
    await eventually(lambda: [e.key for e in seen] == ["unreported"])
    # The replacement dies before reporting anything: its own replacement publishes
    # nothing twice.
    await eventually(lambda: writer._channel is not None and writer.pid != old)
    second = writer.pid
    assert second is not None
    os.kill(second, signal.SIGKILL)
    await eventually(lambda: writer._channel is not None and writer.pid != second)
    await sqlite_store.set(put("b", 2))
    await eventually(lambda: [e.key for e in seen] == ["unreported", "b"])
    assert seen[0].id < seen[1].id


async def test_a_failure_while_answering_leaves_no_caller_waiting(
    sqlite_store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    def failing_once(ops: Any, results: Any) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("index update failed")

    monkeypatch.setattr(sqlite_store._vectors, "apply_committed", failing_once)
    results = await asyncio.wait_for(
        asyncio.gather(*(sqlite_store.set(put(f"k{i}", i)) for i in range(5))), WAIT_SECONDS
    )
    assert [r.data for r in results] == list(range(5)) and len(calls) == 5


async def test_close_does_not_wait_forever_for_a_stuck_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer_process, "STOP_SECONDS", 0.5)
    store = SQLiteStore(str(tmp_path / "stuck.db"))
    await store.open()
    pid = _writer(store).pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    pending = asyncio.create_task(store.set(put("k", 1)))
    await asyncio.sleep(0.1)
    await asyncio.wait_for(store.close(), WAIT_SECONDS)
    with pytest.raises(StorageUnavailable):
        await pending
    assert not _alive(pid)


def test_after_a_disk_error_the_writer_refuses_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer loop itself (run here in a thread): once a COMMIT failed on the disk,
    it commits nothing more; only a restart (WAL recovery) tells what is on disk."""
    committed: list[int] = []

    def commit_failing_on_disk(conn: Any, group: list[Unit]) -> float:
        committed.append(len(group))
        disk = sqlite3.OperationalError("disk I/O error")
        disk.sqlite_errorcode = sqlite3.SQLITE_IOERR_FSYNC  # type: ignore[attr-defined]
        for unit in group:
            unit.error = StorageUnavailable(f"database write failed: {disk}")
            unit.error.__cause__ = disk
        return 0.25

    monkeypatch.setattr(writer_process, "commit_group", commit_failing_on_disk)
    ours, theirs = socket.socketpair()
    db = str(tmp_path / "disk.db")
    sqlite3.connect(db).close()
    thread = threading.Thread(target=writer_process.serve_writer, args=(theirs, db, "FULL"))
    thread.start()
    try:
        buffer = bytearray()
        received: list[Any] = []

        def reply() -> Any:
            while not received:
                buffer.extend(ours.recv(1 << 16))
                received.extend(writer_process._split_frames(buffer))
            return received.pop(0)

        assert reply() == "ready"
        for ticket in (1, 2):
            ours.sendall(writer_process._frame([(ticket, pickle.dumps([put("k", ticket)]))]))
            commit_seconds, ((answered, results, error, events),) = reply()
            assert answered == ticket and results is None and events == []
            # Timed when a commit was attempted (the first), not when refused (the second).
            assert commit_seconds == (0.25 if ticket == 1 else None)
            assert isinstance(error, StorageUnavailable) and "disk I/O error" in str(error)
        assert "restart the server" in str(error)
        assert committed == [1]  # the second write was not attempted
    finally:
        ours.close()
        thread.join(WAIT_SECONDS)
        theirs.close()


async def test_close_answers_every_write_sent(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "c.db"))
    await store.open()
    pid = _writer(store).pid
    writes = [asyncio.create_task(store.set(put(f"k{i}", i))) for i in range(100)]
    await asyncio.sleep(0)  # sent, not yet answered
    await store.close()
    assert [w.result().data for w in writes] == list(range(100))
    assert pid is not None and not _alive(pid)
    reopened = SQLiteStore(str(tmp_path / "c.db"), writer="thread")
    await reopened.open()
    try:
        assert len(await reopened.get_many([f"k{i}" for i in range(100)], [G])) == 100
    finally:
        await reopened.close()


def test_the_writer_exits_when_its_server_is_killed(tmp_path: Path) -> None:
    db = str(tmp_path / "killed.db")
    with ServerProcess(["--database-url", f"sqlite:///{db}"]) as server:
        r = httpx.post(f"{server.url}/api/v1/memory/set", json={"key": "k", "data": 1})
        assert r.status_code == 200
        pids = sqlite_writer_pids(db)
        assert len(pids) == 1
        server.kill()
    deadline = time.monotonic() + WAIT_SECONDS
    while _alive(pids[0]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pids[0])
