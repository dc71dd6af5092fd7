"""Pipelined durability for the SQLite writer: fsync the WAL off the writer thread.

With ``synchronous=FULL`` SQLite fsyncs the WAL inside every COMMIT, and the single
writer can start nothing else meanwhile: measured under ``wrk`` (16 connections),
the fsync was a quarter of each group's time, and sets ran at ~6,600/s against
~10,000/s without it. Instead the writer commits with ``synchronous=NORMAL`` (the
frames are written, not synced) and hands the group to this syncer, which fsyncs the
WAL file and only then lets the group be answered, while the writer is already
committing the next group. One fsync covers every group committed before it starts,
so under load groups share fsyncs as well as transactions.

Every acknowledged write is still on disk. What changes: a read may see a committed
write up to one fsync before its writer is answered (as with Redis's ``appendfsync
always``); events and answers still wait for the fsync.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from ..planning import take_queued

log = logging.getLogger("agentfield_asgi.store")

T = TypeVar("T")


class WalSyncer(Generic[T]):
    """A thread that makes committed groups durable, in commit order.

    ``submit(group)`` after each COMMIT; ``done(groups, error)`` runs on the syncer
    thread once an fsync that started after their COMMITs returned (``error`` is the
    ``OSError`` when it failed: the groups are not known to be durable).
    """

    def __init__(self, wal_path: str, done: Callable[[list[T], OSError | None], None]) -> None:
        self.wal_path = wal_path
        self._done = done
        self._queue: queue.SimpleQueue[T | None] = queue.SimpleQueue()
        self._fd: int | None = None
        self._inode: tuple[int, int] | None = None
        self.last_seconds = 0.0
        """How long the latest fsync took (read by ``done``, on this thread)."""
        self._thread = threading.Thread(
            target=self._run, name="agentfield-sqlite-sync", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def submit(self, group: T) -> None:
        self._queue.put(group)

    def stop(self) -> None:
        """Sync and hand over everything submitted, then end the thread."""
        self._queue.put(None)
        self._thread.join()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            # Everything committed by now is covered by the one fsync below.
            groups, stopping = take_queued(self._queue, first)
            error: OSError | None = None
            started = time.perf_counter()
            try:
                self.sync()
                self.last_seconds = time.perf_counter() - started
            except OSError as exc:
                log.critical("fsync of %s failed: %s", self.wal_path, exc)
                error = exc
            self._done(groups, error)

    def sync(self) -> None:
        """fsync the WAL file as it is now (reopened if SQLite replaced it)."""
        st = os.stat(self.wal_path)
        if self._fd is None or (st.st_dev, st.st_ino) != self._inode:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            self._fd = os.open(self.wal_path, os.O_RDONLY)
            opened = os.fstat(self._fd)
            self._inode = (opened.st_dev, opened.st_ino)
            # A new file: its directory entry must be durable too.
            directory = os.open(os.path.dirname(os.path.abspath(self.wal_path)), os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        os.fsync(self._fd)
