"""EventHub: live fan-out of committed change events to subscribers.

The hub never writes events; it receives them from the store's watch feed (which
carries every committed event once, in id order, including other instances'
writes on PostgreSQL) and offers each to the matching subscribers' bounded
queues. The write path never waits for a subscriber: a subscriber whose queue
overflows is cut off (it resumes later from its last id), others are unaffected.

A resuming subscriber (:meth:`EventHub.stream` with ``after_id``) first reads the
durable log while registered but *paused* (its queue stays empty however far
behind it is), then switches to live at the hub's current head and reads the
little gap before it from the log too: each event once, in id order.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from types import TracebackType

from . import tracing
from .codec import dumps
from .errors import SubscriberLimit
from .patterns import compile_pattern, glob_to_regex
from .store.base import Event, EventFilter, Store

log = logging.getLogger("agentfield_asgi.events")

LOG_PAGE = 500
"""Events read from the log per query while a subscriber catches up."""


class _Marker:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


OVERFLOW = _Marker("OVERFLOW")
"""Ends a subscriber's stream when it fell too far behind (it resumes from its last id)."""
CLOSED = _Marker("CLOSED")
"""Ends every stream when the hub shuts down."""


@dataclass(frozen=True, slots=True)
class Reset:
    """Yielded by a stream when events after the resume point are no longer in the log.

    ``reason``: ``"compacted"`` (retention removed them) or ``"unknown_id"`` (the id is
    newer than anything this log holds, e.g. the database was replaced). The stream
    continues after ``resume_from``.
    """

    reason: str
    resume_from: int

    def to_dict(self) -> dict[str, str]:
        return {"type": "reset", "reason": self.reason, "resume_from": str(self.resume_from)}

    def to_json(self) -> bytes:
        return dumps(self.to_dict())

    def to_sse(self) -> bytes:
        # The id moves a browser's lastEventId past the gap, so its next reconnect does
        # not get the same reset again.
        return b"id: %d\nevent: reset\ndata: %s\n\n" % (self.resume_from, self.to_json())


StreamItem = Event | Reset | _Marker


def _key_matcher(patterns: tuple[str, ...]) -> Callable[[str], object] | None:
    """One compiled regex for all of a subscriber's patterns (None: every key)."""
    if not patterns:
        return None
    for p in patterns:
        compile_pattern(p)  # raises InvalidPattern with a clear message
    return re.compile("|".join(glob_to_regex(p) for p in patterns), re.DOTALL).match


@dataclass(eq=False, slots=True)
class Subscription:
    """One registered subscriber: its filter and a bounded queue.

    While ``live`` is False (catching up from the log) events are not queued: the
    log has them.
    """

    flt: EventFilter
    queue: asyncio.Queue[Event | _Marker]
    client: str | None = None
    live: bool = True
    closed: bool = False
    readable: Callable[[str, str], bool] | None = None
    """Which scopes the subscriber may read (its API key's grants); None: every scope."""
    _match: Callable[[str], object] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._match = _key_matcher(self.flt.patterns)

    def wants(self, event: Event) -> bool:
        flt = self.flt
        if flt.scope and event.scope != flt.scope:
            return False
        if flt.scope_id and event.scope_id != flt.scope_id:
            return False
        if self.readable is not None and not self.readable(event.scope, event.scope_id):
            return False
        return self._match is None or self._match(event.key) is not None

    def offer(self, event: Event) -> bool:
        """Queue ``event``; False when the queue overflowed (the subscription is then ended)."""
        if self.closed:
            return False
        if not self.live:
            return True
        try:
            self.queue.put_nowait(event)
            return True
        except asyncio.QueueFull:
            self.end(OVERFLOW)
            return False

    def end(self, marker: _Marker) -> None:
        """Drop what is queued and wake the consumer with ``marker``; no more events after it."""
        if self.closed:
            return
        self.closed = True
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(marker)


class EventHub:
    """Fan-out of the store's event feed to in-process subscribers."""

    def __init__(self, store: Store, *, queue_size: int = 1000, max_per_client: int = 256) -> None:
        self.store = store
        self.queue_size = queue_size
        self.max_per_client = max_per_client
        self.last_id = 0
        """The newest event id dispatched (every event up to it is committed)."""
        self._subs: set[Subscription] = set()
        self._per_client: dict[str, int] = {}
        self._unwatch: Callable[[], None] | None = None
        self.cut_off = 0
        """How many subscribers were disconnected for falling behind (for the metrics)."""

    @property
    def subscriber_count(self) -> int:
        return len(self._subs)

    @property
    def running(self) -> bool:
        return self._unwatch is not None

    async def start(self) -> None:
        self._unwatch = self.store.watch(self._on_events)
        self.last_id = max(self.last_id, await self.store.last_event_id())

    async def stop(self) -> None:
        """End every stream (they see :data:`CLOSED`) and stop following the store."""
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        for sub in list(self._subs):
            sub.end(CLOSED)
            self.unsubscribe(sub)

    def _on_events(self, events: list[Event]) -> None:
        attributes = {
            "agentfield.events.count": len(events),
            "agentfield.events.last_id": events[-1].id if events else 0,
            "agentfield.subscribers": len(self._subs),
        }
        with tracing.internal_span("deliver memory events", attributes):
            self._dispatch(events)

    def _dispatch(self, events: list[Event]) -> None:
        subs = tuple(self._subs)
        for event in events:
            if event.id <= self.last_id:
                continue
            self.last_id = event.id
            for sub in subs:
                if not sub.closed and sub.wants(event) and not sub.offer(event):
                    log.warning("subscriber %s fell behind; disconnecting it", sub.client or "?")
                    self.cut_off += 1
                    self.unsubscribe(sub)

    def subscribe(
        self,
        flt: EventFilter,
        *,
        client: str | None = None,
        live: bool = True,
        readable: Callable[[str, str], bool] | None = None,
    ) -> Subscription:
        """Register a subscriber; live ones receive every matching event after :attr:`last_id`.

        Raises :class:`SubscriberLimit` when ``client`` holds too many already. After
        :meth:`stop` the subscription is born ended (its queue holds :data:`CLOSED`).
        """
        if client is not None and self._per_client.get(client, 0) >= self.max_per_client:
            raise SubscriberLimit(
                f"too many event subscriptions from this client (max {self.max_per_client})",
                details={"max_subscribers": self.max_per_client},
            )
        sub = Subscription(
            flt, asyncio.Queue(self.queue_size), client, live=live, readable=readable
        )
        if not self.running:
            sub.end(CLOSED)
            return sub
        if client is not None:
            self._per_client[client] = self._per_client.get(client, 0) + 1
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Remove ``sub`` at once (idempotent)."""
        if sub not in self._subs:
            return
        self._subs.discard(sub)
        sub.closed = True
        if sub.client is not None:
            left = self._per_client.get(sub.client, 1) - 1
            if left:
                self._per_client[sub.client] = left
            else:
                self._per_client.pop(sub.client, None)

    def stream(
        self,
        flt: EventFilter,
        *,
        after_id: int | None = None,
        client: str | None = None,
        readable: Callable[[str, str], bool] | None = None,
    ) -> EventStream:
        """Register a subscriber now and return its stream (see :class:`EventStream`).

        Without ``after_id`` the stream starts after the newest committed event as of
        :meth:`EventStream.open` (or its first iteration); with it, it replays the events
        after ``after_id`` from the log first. Raises :class:`SubscriberLimit`.
        """
        sub = self.subscribe(flt, client=client, live=after_id is None, readable=readable)
        return EventStream(self, sub, after_id)


class EventStream:
    """A registered subscriber as an async iterator of :data:`StreamItem`.

    Yields events matching the filter, each once, in id order; a :class:`Reset` when the
    log no longer holds what the resume point needs; ends after :data:`OVERFLOW` or
    :data:`CLOSED`. Always :meth:`close` it (or use ``async with``): that removes the
    registration at once, whether or not iteration ever started.
    """

    def __init__(self, hub: EventHub, sub: Subscription, after_id: int | None) -> None:
        self._hub = hub
        self._sub = sub
        self.last_id = hub.last_id if after_id is None else after_id
        """The id of the last event yielded (or the resume point)."""
        self._resuming = after_id is not None
        self._opened = False

    @property
    def subscription(self) -> Subscription:
        return self._sub

    def close(self) -> None:
        self._hub.unsubscribe(self._sub)

    def end(self, marker: _Marker = CLOSED) -> None:
        """Make the iterator finish after yielding ``marker`` (e.g. on server shutdown)."""
        self._sub.end(marker)
        self.close()

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def open(self) -> None:
        """Fix the starting point; call it before telling a client it is connected.

        A live stream starts after the newest *committed* event: on PostgreSQL the hub
        learns of commits (other instances' too) a moment later, and an event committed
        before the client connected must not reach it as new. (Iteration opens the
        stream itself when this was not called.)
        """
        if self._opened:
            return
        self._opened = True
        if not self._resuming and not self._sub.closed:
            # Registered live already: everything after this head reaches the queue.
            self.last_id = max(self.last_id, await self._hub.store.last_event_id())

    def __aiter__(self) -> AsyncIterator[StreamItem]:
        return self._items()

    async def _items(self) -> AsyncIterator[StreamItem]:
        await self.open()
        sub = self._sub
        if self._resuming and not sub.closed:
            head = max(self._hub.last_id, await self._hub.store.last_event_id())
            if self.last_id > head:
                self.last_id = head
                yield Reset("unknown_id", head)
            async for item in self._from_log(upto=None):
                yield item
            # Go live at the hub's head; the log covers everything up to it.
            switch = self._hub.last_id
            sub.live = True
            async for item in self._from_log(upto=switch):
                yield item
        while True:
            queued = await sub.queue.get()
            if isinstance(queued, _Marker):
                yield queued
                return
            if queued.id > self.last_id:
                self.last_id = queued.id
                yield queued

    async def _from_log(self, upto: int | None) -> AsyncIterator[Event | Reset]:
        """Matching events after :attr:`last_id` (up to ``upto``) from the log, page by page."""
        store, flt = self._hub.store, self._sub.flt
        while not self._sub.closed and (upto is None or self.last_id < upto):
            page = await store.events_after(self.last_id, LOG_PAGE, flt)
            # Checked after the read: a page read before a compaction is still whole.
            through = await store.compacted_through()
            if self.last_id < through:
                self.last_id = through
                yield Reset("compacted", through)
                continue
            more = len(page) == LOG_PAGE
            if upto is not None and page and page[-1].id > upto:
                page = [e for e in page if e.id <= upto]
                more = False
            readable = self._sub.readable
            for event in page:
                self.last_id = event.id
                if readable is None or readable(event.scope, event.scope_id):
                    yield event
            if not more:
                return


async def compact_periodically(
    store: Store, *, max_age_seconds: float | None, max_events: int | None, interval: float
) -> None:
    """Apply event-log retention now and every ``interval`` seconds (runs until cancelled)."""
    if (max_age_seconds is None and max_events is None) or interval <= 0:
        return
    while True:
        try:
            removed = await store.compact(max_age_seconds=max_age_seconds, max_events=max_events)
            if removed:
                log.info("event log compaction removed %d events", removed)
        except Exception:
            log.exception("event log compaction failed; retrying in %.0fs", interval)
        await asyncio.sleep(interval)


__all__ = [
    "CLOSED",
    "OVERFLOW",
    "EventHub",
    "EventStream",
    "Reset",
    "StreamItem",
    "SubscriberLimit",
    "Subscription",
    "compact_periodically",
]
