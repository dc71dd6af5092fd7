"""Memory change subscriptions for the SDK: ``on_change`` handlers and event history.

Each subscription reads one filtered stream of change events and calls its handler with
each event, one at a time, in id order. It remembers the id of the last event it
delivered; when the stream drops (network, server restart, the server cutting off a
slow reader) it reconnects with backoff and resumes after that id (``Last-Event-ID``),
so a handler sees every event exactly once, in order. A handler that raises is logged
and the stream goes on.

The stream comes from the transport (:meth:`Transport.event_source`): over HTTP
``GET /api/v1/memory/events/sse``; when the memory service lives in this process, its
event hub directly: same filters, same resume rules, no socket. The value objects
(events, resets, filters) are in ``change_events.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx

from ..errors import MemoryAccessError
from .change_events import Filter, MemoryChangeEvent, StreamReset, make_filter
from .transports.base import API_PREFIX, EventSource, StreamRefused, Transport

log = logging.getLogger("agentfield_asgi.client.events")

HISTORY_PATH = f"{API_PREFIX}/memory/events/history"
Handler = Callable[["MemoryChangeEvent"], Any]
ResetHandler = Callable[["StreamReset"], Any]
HeadersFn = Callable[[], Mapping[str, str]]


# ---------------------------------------------------------------- one subscription


class ChangeSubscription:
    """One handler on one filtered stream; see the module docstring.

    ``last_event_id``: the id of the last event delivered (where a reconnect resumes);
    None until the first event when it started live.
    """

    def __init__(
        self,
        registry: _Registry,
        flt: Filter,
        handler: Handler,
        *,
        last_event_id: str | None = None,
        on_reset: ResetHandler | None = None,
    ) -> None:
        self._registry = registry
        self.filter = flt
        self.handler = handler
        self.on_reset = on_reset
        self.last_event_id = last_event_id
        self.connected = asyncio.Event()
        """Set while the stream is live (cleared while reconnecting)."""
        self.error: Exception | None = None
        """Set when the subscription gave up (an error retrying cannot fix)."""
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if not self.running:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self.connected.clear()

    async def wait_connected(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Wait until the stream is live (events written from then on are delivered).
        Raises :attr:`error` as soon as the subscription gives up (e.g. a 403: the API key
        may not read what it watches), ``TimeoutError`` after ``timeout`` seconds."""
        live = asyncio.ensure_future(self.connected.wait())
        waits: set[asyncio.Future[Any]] = {live}
        if self._task is not None:
            waits.add(self._task)
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            live.cancel()
        if self.connected.is_set():
            return
        if self.error is not None:
            raise self.error
        raise TimeoutError("the event stream did not open in time")

    async def _run(self) -> None:
        registry = self._registry
        delay = registry.backoff_initial
        while True:
            after = int(self.last_event_id) if self.last_event_id is not None else None
            stream = registry.source.open(self.filter, after, registry.headers())
            try:
                async with contextlib.aclosing(stream):  # release the connection at once
                    async for item in stream:
                        if item == "connected":
                            self.connected.set()
                            delay = registry.backoff_initial
                        elif isinstance(item, StreamReset):
                            await self._reset(item)
                        elif isinstance(item, MemoryChangeEvent):
                            await self._deliver(item)
            except StreamRefused as exc:
                self.error = exc.args[0]
                log.error("event subscription %s stopped: %s", self.filter, self.error)
                self.connected.clear()
                return
            except (httpx.HTTPError, MemoryAccessError, OSError) as exc:
                log.info("event stream dropped (%r); reconnecting in %.1fs", exc, delay)
            except Exception:  # never let a surprise end the subscription for good
                log.exception("event stream failed; reconnecting in %.1fs", delay)
            self.connected.clear()
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, registry.backoff_max)

    async def _deliver(self, event: MemoryChangeEvent) -> None:
        if self.last_event_id is not None and event.seq <= int(self.last_event_id):
            return  # already delivered (defensive: the server sends each once)
        try:
            await _call(self.handler, event)
        except Exception:
            log.exception("on_change handler %s failed on event %s", _name(self.handler), event.id)
        self.last_event_id = event.id

    async def _reset(self, reset: StreamReset) -> None:
        log.warning(
            "events after %s were lost to retention (%s); resuming after %s",
            self.last_event_id,
            reset.reason,
            reset.resume_from,
        )
        self.last_event_id = reset.resume_from
        if self.on_reset is not None:
            try:
                await _call(self.on_reset, reset)
            except Exception:
                log.exception("on_reset handler failed")


async def _call(fn: Callable[[Any], Any], arg: Any) -> None:
    result = fn(arg)
    if inspect.isawaitable(result):
        await result


def _name(fn: Any) -> str:
    return getattr(fn, "__qualname__", repr(fn))


# ---------------------------------------------------------------- the SDK surface


class _Registry:
    """Every subscription made through one memory client (and its scoped views)."""

    def __init__(
        self,
        transport: Transport,
        headers: HeadersFn,
        *,
        read_timeout: float,
        backoff_initial: float,
        backoff_max: float,
    ) -> None:
        self.transport = transport
        self.headers = headers
        self.read_timeout = read_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.subscriptions: list[ChangeSubscription] = []
        self.started = False
        self._source: EventSource | None = None

    @property
    def source(self) -> EventSource:
        if self._source is None:
            self._source = self.transport.event_source(self.read_timeout)
        return self._source


class MemoryEvents:
    """``memory.events``: change subscriptions and event history.

    Subscriptions made before :meth:`start` begin when it is called (an
    :class:`~agentfield_asgi.Agent` starts them with its lifespan); those made after
    start at once. On a scoped view (``memory.session("u1").events``) subscriptions and
    history default to that scope and scope id.
    """

    def __init__(
        self,
        transport: Transport,
        headers: HeadersFn = dict,
        *,
        read_timeout: float = 60.0,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        _registry: _Registry | None = None,
        _scope: str | None = None,
        _scope_id: str | None = None,
    ) -> None:
        self._registry = _registry or _Registry(
            transport,
            headers,
            read_timeout=read_timeout,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
        )
        self.scope = _scope
        self.scope_id = _scope_id

    def bound(self, scope: str, scope_id: str | None) -> MemoryEvents:
        """The same subscriptions, with ``scope`` / ``scope_id`` as the default filter."""
        return MemoryEvents(
            self._registry.transport, _registry=self._registry, _scope=scope, _scope_id=scope_id
        )

    @property
    def subscriptions(self) -> list[ChangeSubscription]:
        return list(self._registry.subscriptions)

    def _filter(
        self, patterns: str | Sequence[str] | None, scope: str | None, scope_id: str | None
    ) -> Filter:
        if self.scope is not None:
            if scope is not None or scope_id is not None:
                raise TypeError("a scoped client's events are fixed to its scope")
            if self.scope_id is None:
                raise ValueError(
                    f"no {self.scope} id: pass one (memory.{self.scope}('id')) or call this "
                    "inside a request that carries it"
                )
            scope, scope_id = self.scope, self.scope_id
        return make_filter(patterns, scope, scope_id)

    def subscribe(
        self,
        patterns: str | Sequence[str] | None,
        handler: Handler,
        *,
        scope: str | None = None,
        scope_id: str | None = None,
        last_event_id: str | int | None = None,
        on_reset: ResetHandler | None = None,
    ) -> ChangeSubscription:
        """Call ``handler`` (sync or async) with each change to keys matching ``patterns``
        (one glob or a list; None: every key). ``last_event_id`` resumes after that id
        instead of starting live. Returns the subscription (``await sub.stop()`` ends it).
        ``on_reset`` is told when retention dropped events after the resume point."""
        return self._add(self._filter(patterns, scope, scope_id), handler, last_event_id, on_reset)

    def _add(
        self,
        flt: Filter,
        handler: Handler,
        last_event_id: str | int | None = None,
        on_reset: ResetHandler | None = None,
    ) -> ChangeSubscription:
        sub = ChangeSubscription(
            self._registry,
            flt,
            handler,
            last_event_id=None if last_event_id is None else str(last_event_id),
            on_reset=on_reset,
        )
        self._registry.subscriptions.append(sub)
        if self._registry.started:
            sub.start()
        return sub

    def on_change(
        self,
        patterns: str | Sequence[str] | None = None,
        *,
        scope: str | None = None,
        scope_id: str | None = None,
    ) -> Callable[[Handler], Handler]:
        """Decorator form of :meth:`subscribe`; returns the function unchanged. Bad patterns
        or scopes raise ``ValueError`` here, not later in the background."""
        flt = self._filter(patterns, scope, scope_id)

        def register(handler: Handler) -> Handler:
            self._add(flt, handler)
            return handler

        return register

    async def unsubscribe(self, sub: ChangeSubscription) -> None:
        """Stop ``sub`` and forget it (a later :meth:`start` does not restart it)."""
        await sub.stop()
        with contextlib.suppress(ValueError):
            self._registry.subscriptions.remove(sub)

    async def start(self) -> None:
        """Start every subscription (and any made later)."""
        self._registry.started = True
        for sub in self._registry.subscriptions:
            sub.start()

    async def stop(self) -> None:
        """Stop every subscription and close their connections (start() resumes them
        after the last delivered ids)."""
        registry = self._registry
        registry.started = False
        await asyncio.gather(*(sub.stop() for sub in registry.subscriptions))
        if registry._source is not None:
            await registry._source.aclose()

    async def wait_connected(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Wait until every started subscription is live."""
        subs = [s for s in self._registry.subscriptions if s.running]
        await asyncio.wait_for(asyncio.gather(*(s.connected.wait() for s in subs)), timeout)

    async def __aenter__(self) -> MemoryEvents:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def history(
        self,
        patterns: str | Sequence[str] | None = None,
        *,
        scope: str | None = None,
        scope_id: str | None = None,
        since: datetime | str | None = None,
        since_id: str | int | None = None,
        limit: int = 100,
    ) -> list[MemoryChangeEvent]:
        """Past events, oldest first: the newest ``limit`` matching ones (at or after
        ``since``; a naive datetime is UTC), or with ``since_id`` the first ``limit`` after
        that id (page forward with the last id you got)."""
        params = self._filter(patterns, scope, scope_id).params()
        params["limit"] = str(limit)
        if since is not None:
            if isinstance(since, datetime):
                since = (since if since.tzinfo else since.replace(tzinfo=UTC)).isoformat()
            params["since"] = since
        if since_id is not None:
            params["since_id"] = str(since_id)
        reply = await self._registry.transport.request(
            "GET", HISTORY_PATH, params=params, headers=self._registry.headers()
        )
        if not reply.ok:
            raise reply.access_error()
        return [MemoryChangeEvent.from_dict(item) for item in reply.body]


__all__ = [
    "ChangeSubscription",
    "Filter",
    "MemoryChangeEvent",
    "MemoryEvents",
    "StreamReset",
]
