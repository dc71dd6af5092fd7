"""Memory change subscriptions for the SDK: ``on_change`` handlers and event history.

Each subscription reads one filtered stream of change events and calls its handler with
each event, one at a time, in id order. It remembers the id of the last event it
delivered; when the stream drops (network, server restart, the server cutting off a
slow reader) it reconnects with backoff and resumes after that id (``Last-Event-ID``),
so a handler sees every event exactly once, in order. A handler that raises is logged
and the stream goes on.

Over HTTP the stream is ``GET /api/v1/memory/events/sse``. When the memory service
lives in this process (in-process transport) the subscription reads the service's
event hub directly: same filters, same resume rules, no socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx

from ..codec import loads
from ..context import HEADER_API_KEY
from ..errors import MemoryAccessError
from ..patterns import InvalidPattern, parse_patterns
from ..store.base import SCOPES
from .transport import API_PREFIX, InProcessTransport, Transport

if TYPE_CHECKING:
    from ..server.app import MemoryService

log = logging.getLogger("agentfield_asgi.client.events")

SSE_PATH = f"{API_PREFIX}/memory/events/sse"
HISTORY_PATH = f"{API_PREFIX}/memory/events/history"
Handler = Callable[["MemoryChangeEvent"], Any]
ResetHandler = Callable[["StreamReset"], Any]
HeadersFn = Callable[[], Mapping[str, str]]


@dataclass(frozen=True, slots=True)
class MemoryChangeEvent:
    """One change to memory, as the protocol's event object (``id`` is the wire's string;
    ids compare correctly as integers)."""

    id: str
    type: str
    timestamp: str
    scope: str
    scope_id: str
    key: str
    action: str
    data: Any = None
    previous_data: Any = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> MemoryChangeEvent:
        return cls(
            id=str(body["id"]),
            type=body.get("type", "memory_change"),
            timestamp=body.get("timestamp", ""),
            scope=body["scope"],
            scope_id=body["scope_id"],
            key=body["key"],
            action=body["action"],
            data=body.get("data"),
            previous_data=body.get("previous_data"),
            metadata=dict(body.get("metadata") or {}),
        )

    @property
    def seq(self) -> int:
        """The id as an integer."""
        return int(self.id)


@dataclass(frozen=True, slots=True)
class StreamReset:
    """The server no longer had every event after the resume point (``reason``:
    ``"compacted"`` by retention, or ``"unknown_id"``); delivery goes on after
    ``resume_from``. Events in between were lost to this subscriber."""

    reason: str
    resume_from: str


@dataclass(frozen=True, slots=True)
class Filter:
    """Which events a subscription or history call wants."""

    patterns: tuple[str, ...] = ()
    scope: str | None = None
    scope_id: str | None = None

    def params(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.patterns:
            out["patterns"] = ",".join(self.patterns)
        if self.scope:
            out["scope"] = self.scope
        if self.scope_id:
            out["scope_id"] = self.scope_id
        return out


def make_filter(
    patterns: str | Sequence[str] | None, scope: str | None, scope_id: str | None
) -> Filter:
    """Validate patterns (same rules as the server) and scope up front, so a mistake fails
    at the decorator rather than in a background reconnect loop."""
    if isinstance(patterns, str):
        patterns = [patterns]
    try:
        parsed = parse_patterns(list(patterns or ()))
    except InvalidPattern as exc:
        raise ValueError(exc.message) from None
    if scope is not None and scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; expected one of {', '.join(SCOPES)}")
    return Filter(parsed, scope, scope_id)


# ---------------------------------------------------------------- event sources
#
# A source opens one stream after a resume point and yields, in order: "connected"
# once it is live, then event bodies (dicts) and StreamResets. It returns when the
# server ends the stream; it raises _Permanent for an error retrying cannot fix.


class _Permanent(Exception):
    pass


_Item = str | dict[str, Any] | StreamReset


class _SSESource:
    """``GET /api/v1/memory/events/sse`` over HTTP."""

    def __init__(self, base_url: str, api_key: str | None, read_timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = httpx.Timeout(10.0, read=read_timeout)
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None or self._client.is_closed:
            # Own connections: a long-lived stream must not hold one of the request pool's.
            self._client = httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout)
        return self._client

    async def open(
        self, flt: Filter, after: int | None, headers: Mapping[str, str]
    ) -> AsyncGenerator[_Item, None]:
        send = {**headers, "Accept": "text/event-stream"}
        if self.api_key:
            send[HEADER_API_KEY] = self.api_key
        if after is not None:
            send["Last-Event-ID"] = str(after)
        async with self._http().stream("GET", SSE_PATH, params=flt.params(), headers=send) as r:
            if r.status_code != 200:
                await r.aread()
                body = _json_or_none(r.content)
                error = _access_error(r.status_code, body)
                if r.status_code in (400, 401, 403, 404):
                    raise _Permanent(error)
                raise error
            async for item in _parse_sse(r.aiter_lines()):
                yield item

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


async def _parse_sse(lines: AsyncIterator[str]) -> AsyncIterator[_Item]:
    """SSE frames -> items (the text/event-stream rules: ``data`` lines join with newlines,
    a blank line ends a frame, ``:`` starts a comment)."""
    event = "message"
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                body = loads("\n".join(data))
                if event == "message":
                    yield body
                elif event == "reset":
                    yield StreamReset(str(body.get("reason")), str(body.get("resume_from")))
            event, data = "message", []
            continue
        if line.startswith(":"):
            if line[1:].strip() == "connected":
                yield "connected"
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value


class _HubSource:
    """The event hub of a memory service in this process (no HTTP)."""

    def __init__(self, service: MemoryService) -> None:
        self.service = service
        self._opened = False

    async def open(
        self, flt: Filter, after: int | None, headers: Mapping[str, str]
    ) -> AsyncGenerator[_Item, None]:
        from ..events import Reset
        from ..store.base import Event, EventFilter

        if not self._opened:
            await self.service.ready()  # lazy start, as for any in-process call
            self._opened = True
        if not self.service.hub.running:
            raise ConnectionError("the memory service is not running")
        hub_filter = EventFilter(flt.patterns, flt.scope, flt.scope_id)
        async with self.service.hub.stream(hub_filter, after_id=after) as stream:
            await stream.open()
            yield "connected"
            async for item in stream:
                if isinstance(item, Event):
                    yield loads(item.to_json())
                elif isinstance(item, Reset):
                    yield StreamReset(item.reason, str(item.resume_from))
                else:  # overflow or shutdown: reconnect and resume
                    return

    async def aclose(self) -> None:
        pass


def _source_for(transport: Transport, read_timeout: float) -> _SSESource | _HubSource:
    if isinstance(transport, InProcessTransport):
        return _HubSource(transport.service)
    base_url = getattr(transport, "base_url", None)
    if not base_url:
        raise TypeError(f"cannot subscribe to events through {type(transport).__name__}")
    return _SSESource(base_url, getattr(transport, "api_key", None), read_timeout)


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
                        elif isinstance(item, dict):
                            await self._deliver(item)
            except _Permanent as exc:
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

    async def _deliver(self, body: dict[str, Any]) -> None:
        event = MemoryChangeEvent.from_dict(body)
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


def _json_or_none(content: bytes) -> Any:
    try:
        return loads(content) if content else None
    except ValueError:
        return None


def _access_error(status: int, body: Any) -> MemoryAccessError:
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        details = body.get("details")
        return MemoryAccessError(
            body["error"],
            status=status,
            code=str(body.get("code") or "error"),
            details=details if isinstance(details, dict) else {},
        )
    return MemoryAccessError(f"HTTP {status}", status=status, code=f"http_{status}")


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
        self._source: _SSESource | _HubSource | None = None

    @property
    def source(self) -> _SSESource | _HubSource:
        if self._source is None:
            self._source = _source_for(self.transport, self.read_timeout)
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
            message, code, details = reply.error_fields()
            raise MemoryAccessError(message, status=reply.status, code=code, details=details)
        return [MemoryChangeEvent.from_dict(item) for item in reply.body]


__all__ = [
    "ChangeSubscription",
    "Filter",
    "MemoryChangeEvent",
    "MemoryEvents",
    "StreamReset",
]
