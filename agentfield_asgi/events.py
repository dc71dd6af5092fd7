"""EventHub: live fan-out of committed change events to subscribers.

The hub never writes events; it receives them from the store's watch feed (which
carries every committed event once, in id order, including other instances'
writes on PostgreSQL) and offers each to the matching subscribers' bounded
queues. The write path never waits for a subscriber: a subscriber whose queue
overflows is cut off (it resumes later from its last id), others are unaffected.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from .patterns import matches
from .store.base import Event, EventFilter, Store

log = logging.getLogger("agentfield_asgi.events")


class _Marker:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


OVERFLOW = _Marker("OVERFLOW")
"""Put in a subscriber's queue when it fell too far behind; the stream must end."""
RESET = _Marker("RESET")
"""Yielded by :meth:`EventHub.stream` when the resume point is older than retention."""
CLOSED = _Marker("CLOSED")
"""Put in every queue when the hub shuts down."""


@dataclass(eq=False, slots=True)
class Subscription:
    """One live subscriber: its filter and a bounded queue of events."""

    flt: EventFilter
    queue: asyncio.Queue[Event | _Marker]
    client: str | None = None
    start_id: int = 0
    closed: bool = False

    def wants(self, event: Event) -> bool:
        flt = self.flt
        if flt.scope and event.scope != flt.scope:
            return False
        if flt.scope_id and event.scope_id != flt.scope_id:
            return False
        return matches(flt.patterns, event.key)

    def offer(self, item: Event | _Marker) -> bool:
        """Queue ``item``; False (and the subscription is marked closed) when it overflowed."""
        if self.closed:
            return False
        try:
            self.queue.put_nowait(item)
            return True
        except asyncio.QueueFull:
            self.closed = True
            # Make room for the marker so the consumer wakes up and ends its stream.
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(OVERFLOW)
            return False


class SubscriberLimit(Exception):
    pass


class EventHub:
    """Fan-out of the store's event feed to in-process subscribers."""

    def __init__(self, store: Store, *, queue_size: int = 1000, max_per_client: int = 256) -> None:
        self.store = store
        self.queue_size = queue_size
        self.max_per_client = max_per_client
        self.last_id = 0
        self._subs: set[Subscription] = set()
        self._per_client: dict[str, int] = {}
        self._unwatch: Callable[[], None] | None = None

    @property
    def subscriber_count(self) -> int:
        return len(self._subs)

    async def start(self) -> None:
        self._unwatch = self.store.watch(self._on_events)
        self.last_id = max(self.last_id, await self.store.last_event_id())

    async def stop(self) -> None:
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        for sub in list(self._subs):
            sub.offer(CLOSED)
            self.unsubscribe(sub)

    def _on_events(self, events: list[Event]) -> None:
        for event in events:
            if event.id <= self.last_id:
                continue
            self.last_id = event.id
            for sub in tuple(self._subs):
                if sub.wants(event) and not sub.offer(event):
                    log.warning("subscriber %s overflowed; disconnecting it", sub.client or "?")
                    self.unsubscribe(sub)

    def subscribe(self, flt: EventFilter, *, client: str | None = None) -> Subscription:
        """Register a live subscriber starting after the newest dispatched event."""
        if client is not None:
            if self._per_client.get(client, 0) >= self.max_per_client:
                raise SubscriberLimit(f"too many subscriptions from {client}")
            self._per_client[client] = self._per_client.get(client, 0) + 1
        sub = Subscription(flt, asyncio.Queue(self.queue_size), client, start_id=self.last_id)
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.discard(sub)
            sub.closed = True
            if sub.client is not None:
                left = self._per_client.get(sub.client, 1) - 1
                if left:
                    self._per_client[sub.client] = left
                else:
                    self._per_client.pop(sub.client, None)

    async def stream(
        self, flt: EventFilter, *, after_id: int | None = None, client: str | None = None
    ) -> AsyncIterator[Event | _Marker]:
        """Events matching ``flt``: first those after ``after_id`` from the log (or
        :data:`RESET` if retention dropped some), then live ones, each once, in id order.
        Ends after yielding :data:`OVERFLOW` or :data:`CLOSED`."""
        sub = self.subscribe(flt, client=client)
        try:
            last = sub.start_id
            if after_id is not None:
                last = after_id
                if after_id < await self.store.compacted_through():
                    yield RESET
                while last < sub.start_id:
                    backlog = await self.store.events_after(last, 500, flt)
                    backlog = [e for e in backlog if e.id <= sub.start_id]
                    for event in backlog:
                        yield event
                    if len(backlog) < 500:
                        break
                    last = backlog[-1].id
                last = max(last, sub.start_id)
            while True:
                item = await sub.queue.get()
                if isinstance(item, _Marker):
                    yield item
                    return
                if item.id > last:
                    last = item.id
                    yield item
        finally:
            self.unsubscribe(sub)
