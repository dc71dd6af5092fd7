"""The PostgreSQL event feed: every committed event to the watchers, once, in id order.

Several servers may share one database, so the feed reads the event table rather
than trusting what this process wrote. One task reads ``events_after(delivered)``
in pages whenever it is woken:

* by this process's writer, right after its COMMIT, unless the writer could hand
  over its group's events itself (``deliver_own``: the write statement returns them
  as stored, and they directly follow the last id delivered);
* by a ``NOTIFY`` from any instance's writer (one per group commit, payload the
  group's highest id; sent inside the writing transaction, so delivered only on
  commit), received on a dedicated LISTEN connection (not a pool connection);
* by a slow poll, in case a notification was lost while the listener reconnected.

Reading ``id > delivered`` never skips an event because writers take event ids
under one transaction-level advisory lock: ids commit in id order (see
``store.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator

import asyncpg

from ..base import Event, EventWatcher

log = logging.getLogger("agentfield_asgi.store")

CHANNEL = "agentfield_events"
PAGE = 500
POLL_SECONDS = 1.0
RECONNECT_MAX_SECONDS = 2.0
STOP_WAIT_SECONDS = 10.0


class EventFeed:
    """Wakes on commits and notifications, reads new events from the table, calls watchers."""

    def __init__(
        self,
        read_after: Callable[[int, int], Awaitable[list[Event]]],
        connect: Callable[[], Awaitable[asyncpg.Connection]],
        *,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self._read_after = read_after
        self._connect = connect
        self.poll_seconds = poll_seconds
        self.delivered = 0
        """The highest event id handed to the watchers."""
        self.listener_pid: int | None = None
        """Server pid of the LISTEN connection while it is up (for diagnostics and tests)."""
        self._watchers: list[EventWatcher] = []
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._failing = False
        self._stopping = False
        self._must_read = False  # woken by something other than a NOTIFY
        self._notified = 0  # the highest id a NOTIFY announced
        self._writing = 0  # this process's writer is between its write and its hand-over

    def start(self, after_id: int) -> None:
        """Deliver events after ``after_id`` from now on."""
        self.delivered = after_id
        self._stopping = False
        self._tasks = [
            asyncio.create_task(self._feed_loop(), name="agentfield-pg-feed"),
            asyncio.create_task(self._listen_loop(), name="agentfield-pg-listener"),
        ]

    async def stop(self) -> None:
        """Deliver what is committed by now (best effort), then stop."""
        self._stopping = True  # the loops also check this: a cancel alone can be lost
        self._wake.set()
        for task in self._tasks:
            task.cancel()
        pending: set[asyncio.Task[None]] = set()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=STOP_WAIT_SECONDS)
        self._tasks = []
        if pending:  # never deliver from two places at once
            log.warning("event feed did not stop in %.0f s", STOP_WAIT_SECONDS)
            return
        with contextlib.suppress(Exception):
            await self._catch_up()

    def wake(self) -> None:
        self._must_read = True
        self._wake.set()

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Around this process's write and hand-over: a NOTIFY arriving meanwhile is most
        likely its own, so the feed reads only after the hand-over, and only if the
        events announced were not handed over (or :meth:`wake` asks it to)."""
        self._writing += 1
        try:
            yield
        finally:
            self._writing -= 1
            if self._notified > self.delivered:
                self._wake.set()

    def deliver_own(self, events: list[Event]) -> bool:
        """Hand this process's just-committed events (as stored, in id order) to the
        watchers without reading them back, when they directly follow the last one
        delivered. False when they do not (another instance's events may come between,
        or ids were skipped): then the caller wakes the feed to read them."""
        if not events or self._stopping or events[0].id != self.delivered + 1:
            return False
        self._deliver(events)
        return True

    def _deliver(self, events: list[Event]) -> None:
        self.delivered = events[-1].id
        for watcher in list(self._watchers):
            try:
                watcher(events)
            except Exception:
                log.exception("event watcher failed")

    def watch(self, watcher: EventWatcher) -> Callable[[], None]:
        self._watchers.append(watcher)
        return lambda: self._watchers.remove(watcher) if watcher in self._watchers else None

    # ------------------------------------------------------------ reading
    async def _feed_loop(self) -> None:
        while not self._stopping:
            woken = await _wait(self._wake, self.poll_seconds)
            if self._stopping:
                return
            self._wake.clear()
            if woken and not self._must_read:
                if self._notified <= self.delivered or self._writing:
                    continue  # NOTIFYs of this process's groups (see writing())
            self._must_read = False
            try:
                await self._catch_up()
            except Exception as exc:  # storage down: the next wake-up or poll retries
                if not self._failing:
                    log.warning("event feed cannot read new events: %s", exc)
                self._failing = True
            else:
                if self._failing:
                    log.info("event feed reading again")
                self._failing = False

    async def _catch_up(self) -> None:
        while True:
            page = await self._read_after(self.delivered, PAGE)
            # deliver_own may have delivered some of them while this read was in flight
            events = [e for e in page if e.id > self.delivered]
            if events:
                self._deliver(events)
            if len(page) < PAGE:
                return

    # ------------------------------------------------------------ listening
    def _on_notify(self, conn: object, pid: int, channel: str, payload: str) -> None:
        # The payload is the group's highest event id: this process's own groups (handed
        # over by its writer) need no read; the loop checks again when it wakes.
        try:
            newest = int(payload)
        except ValueError:
            self.wake()
            return
        if newest > self.delivered:
            self._notified = max(self._notified, newest)
            self._wake.set()

    async def _listen_loop(self) -> None:
        delay = 0.1
        while not self._stopping:
            try:
                await self._listen_once()
                delay = 0.1
                log.warning("event listener connection lost; reconnecting")
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                log.debug("event listener cannot connect: %s", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_SECONDS)

    async def _listen_once(self) -> None:
        """LISTEN on a fresh connection until it drops."""
        conn = await self._connect()
        try:
            lost = asyncio.Event()
            conn.add_termination_listener(lambda _conn: lost.set())
            await conn.add_listener(CHANNEL, self._on_notify)
            self.listener_pid = conn.get_server_pid()
            # Anything committed while nobody listened is in the table: read it now.
            self.wake()
            while not lost.is_set() and not conn.is_closed() and not self._stopping:
                await _wait(lost, self.poll_seconds)
        finally:
            self.listener_pid = None
            conn.terminate()


async def _wait(event: asyncio.Event, seconds: float) -> bool:
    """Until ``event`` is set (True) or ``seconds`` pass (False). (``asyncio.timeout``, not
    ``wait_for``: on Python 3.11 ``wait_for`` can swallow a cancellation that races with
    the event.)"""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
            return True
    return False
