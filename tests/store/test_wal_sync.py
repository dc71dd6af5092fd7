"""SQLite durability in the writer thread (``writer="thread"``), pipelined: with
synchronous=FULL the writer commits with NORMAL and a syncer thread fsyncs the WAL before
any caller is answered (store/wal_sync.py). The writer process leaves the fsync to SQLite
inside each COMMIT (tests/store/test_writer_process.py)."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from agentfield_asgi.errors import StorageUnavailable
from agentfield_asgi.store.sqlite import SQLiteStore, wal_sync
from agentfield_asgi.store.sqlite.wal_sync import WalSyncer
from agentfield_asgi.store.sqlite.writer import GroupWriter

from .conftest import G, put


@pytest.fixture
def store(thread_store: SQLiteStore) -> SQLiteStore:
    """The writer thread, whose fsyncs can be held and failed here."""
    return thread_store


class WalFsync:
    """Replaces os.fsync for the WAL file only (by inode): counts, holds or fails it."""

    def __init__(self, wal_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
        self.inode = os.stat(wal_path).st_ino
        self.calls = 0
        self.gate = threading.Event()
        self.gate.set()
        self.delay = 0.0
        self.fail = False
        real = os.fsync

        def fsync(fd: int) -> None:
            if os.fstat(fd).st_ino == self.inode:
                self.calls += 1
                self.gate.wait(30)
                time.sleep(self.delay)
                if self.fail:
                    raise OSError(errno.EIO, "simulated I/O error")
            real(fd)

        monkeypatch.setattr(wal_sync.os, "fsync", fsync)


async def test_a_write_is_answered_only_after_its_wal_fsync(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    wal = WalFsync(store.path + "-wal", monkeypatch)
    wal.gate.clear()
    writing = asyncio.create_task(store.set(put("k", 1)))
    for _ in range(100):  # the commit happens; the fsync is held
        if wal.calls:
            break
        await asyncio.sleep(0.01)
    assert wal.calls == 1
    await asyncio.sleep(0.2)
    assert not writing.done()
    # Committed but not yet durable: a read may see it (documented), the writer waits.
    assert (await store.get("k", [G])).data == 1
    wal.gate.set()
    assert (await asyncio.wait_for(writing, 10)).version == 1


async def test_concurrent_groups_share_fsyncs_and_are_answered_in_order(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    wal = WalFsync(store.path + "-wal", monkeypatch)
    wal.delay = 0.02  # a slow disk: groups committed meanwhile wait for the next fsync
    seen: list[Any] = []
    store.watch(seen.extend)
    results = await asyncio.gather(*(store.set(put(f"k{i}", i)) for i in range(200)))
    assert [r.key for r in results] == [f"k{i}" for i in range(200)]
    assert 1 <= wal.calls < 50
    await asyncio.sleep(0)
    ids = [e.id for e in seen]
    assert len(ids) == 200 and ids == sorted(ids)


async def test_a_failed_fsync_fails_its_writes_and_refuses_later_ones(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    wal = WalFsync(store.path + "-wal", monkeypatch)
    wal.fail = True
    seen: list[Any] = []
    store.watch(seen.extend)
    with pytest.raises(StorageUnavailable, match="could not sync"):
        await store.set(put("k", 1))
    with pytest.raises(StorageUnavailable, match="restart the server"):
        await store.set(put("other", 2))
    await asyncio.sleep(0)
    assert seen == []  # no event for a write that is not known to be durable


async def test_other_modes_leave_syncing_to_sqlite(tmp_path: Path) -> None:
    for mode in ("EXTRA", "NORMAL"):
        s = SQLiteStore(str(tmp_path / f"{mode}.db"), synchronous=mode, writer="thread")
        await s.open()
        try:
            assert isinstance(s._writer, GroupWriter) and s._writer._syncer is None
            assert (await s.set(put("k", mode))).data == mode
        finally:
            await s.close()


def test_the_syncer_follows_a_replaced_wal_file(tmp_path: Path) -> None:
    path = tmp_path / "db-wal"
    path.write_bytes(b"first")
    done: list[Any] = []
    syncer: WalSyncer[str] = WalSyncer(str(path), lambda groups, error: done.append(error))
    syncer.sync()
    first = syncer._inode
    replacement = tmp_path / "new"
    replacement.write_bytes(b"second")
    os.replace(replacement, path)
    syncer.sync()
    assert syncer._inode != first
    assert syncer._inode == (os.stat(path).st_dev, os.stat(path).st_ino)
    syncer.start()
    syncer.submit("a group")
    syncer.stop()
    assert done == [None]
