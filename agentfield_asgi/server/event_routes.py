"""``/api/v1/memory/events/{sse,ws,history}``: HTTP/WebSocket <-> EventHub, per the protocol.

Streams are registered with the hub before the response starts (so a bad filter is a
400 and too many subscriptions a 429, never a broken stream) and unregistered in a
``finally`` the moment the connection ends, however it ends.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import anyio
from sse_starlette import EventSourceResponse
from starlette.datastructures import Headers, QueryParams
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from ..codec import parse_ts
from ..errors import INVALID_PARAMETER, AgentFieldError, BadRequest
from ..events import CLOSED, OVERFLOW, EventStream, Reset, StreamItem, compact_periodically
from ..patterns import parse_patterns
from ..settings import Settings
from ..store.base import Event, EventFilter, Store
from . import access
from .auth import presented_key
from .http import error_response, int_param, json_response, parse_scope

if TYPE_CHECKING:
    from .app import MemoryService

log = logging.getLogger("agentfield_asgi.server.events")

MAX_EVENT_ID = 2**63 - 1
SHUTDOWN_GRACE_SECONDS = 1.0
WS_GOING_AWAY = 1001
WS_POLICY_VIOLATION = 1008
WS_TRY_AGAIN_LATER = 1013


# ---------------------------------------------------------------- request parsing


def event_filter(query: QueryParams, settings: Settings) -> EventFilter:
    """``patterns`` (comma-separated, or repeated), ``scope``, ``scope_id``; 400 when invalid,
    403 when the filter names one scope id the request's key may not read."""
    raw = ",".join(query.getlist("patterns"))
    patterns = parse_patterns(raw or None, max_patterns=settings.max_patterns)
    flt = EventFilter(patterns, parse_scope(query.get("scope")), query.get("scope_id") or None)
    if flt.scope and flt.scope_id:
        access.current().require("read", flt.scope, flt.scope_id)
    return flt


def readable_filter() -> Callable[[str, str], bool] | None:
    """The scopes the request's key may read, for filtering events (None: all of them)."""
    key = access.current()
    return None if key.full else key.can_read


def _event_id(value: str | None, name: str) -> int | None:
    return int_param(value, name, minimum=0, maximum=MAX_EVENT_ID)


def resume_point(headers: Headers, query: QueryParams) -> int | None:
    """Where a stream resumes: ``Last-Event-ID`` header (what a browser's EventSource
    sends on reconnect), else the ``last_event_id`` or ``since_id`` query parameter."""
    header = headers.get("last-event-id")
    if header is not None and header.strip():
        return _event_id(header.strip(), "Last-Event-ID")
    for name in ("last_event_id", "since_id"):
        if query.get(name):
            return _event_id(query.get(name), name)
    return None


_UNENCODED_PLUS = re.compile(r"(T[\d:.]+) (\d{2}(:?\d{2})?)$")


def parse_since(value: str | None) -> int | None:
    """RFC 3339 ``since`` -> microseconds; naive means UTC. A ``+`` sent unencoded in a
    URL arrives as a space, so ``...T10:00:00 02:00`` is read as ``+02:00``."""
    if value is None or value == "":
        return None
    text = _UNENCODED_PLUS.sub(r"\1+\2", value.strip())
    try:
        return parse_ts(text)
    except ValueError:
        raise BadRequest(
            f"'since' must be an RFC 3339 timestamp, got {value!r}",
            code=INVALID_PARAMETER,
            details={"parameter": "since"},
        ) from None


def client_identity(scope: Scope) -> str:
    """Who a subscription counts against for the per-client limit: the API key (hashed,
    never kept or logged in clear), else the peer address."""
    key = presented_key(scope)
    if key:
        return "key:" + hashlib.sha256(key.encode()).hexdigest()[:16]
    peer = scope.get("client")
    return f"addr:{peer[0] if peer else 'unknown'}"


# ---------------------------------------------------------------- SSE


async def _sse_frames(stream: EventStream) -> AsyncIterator[bytes]:
    yield b": connected\n\n"
    async for item in stream:
        if isinstance(item, Event | Reset):
            yield item.to_sse()
        elif item is OVERFLOW:
            # The client reconnects with Last-Event-ID and loses nothing.
            yield b": overflow: resume with Last-Event-ID\n\n"
            return
        else:
            return


class _SSEEndpoint:
    """``GET /memory/events/sse`` as a small ASGI app, so registration and release wrap the
    whole response."""

    def __init__(self, service: MemoryService) -> None:
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        settings = self.service.settings
        flt = event_filter(request.query_params, settings)
        after_id = resume_point(request.headers, request.query_params)
        await self.service.ready()
        stream = self.service.hub.stream(
            flt, after_id=after_id, client=client_identity(scope), readable=readable_filter()
        )
        try:
            await stream.open()
            await self._respond(stream, scope, receive, send)
        finally:
            stream.close()

    async def _respond(
        self, stream: EventStream, scope: Scope, receive: Receive, send: Send
    ) -> None:
        settings = self.service.settings
        shutdown = anyio.Event()
        response = EventSourceResponse(
            _sse_frames(stream),
            ping=settings.sse_ping_seconds,
            send_timeout=settings.sse_send_timeout_seconds,
            sep="\n",
            headers={"Cache-Control": "no-cache"},
            shutdown_event=shutdown,
            shutdown_grace_period=SHUTDOWN_GRACE_SECONDS,
        )
        async with anyio.create_task_group() as tasks:

            async def end_on_shutdown() -> None:
                # sse-starlette sets ``shutdown`` when the server is exiting: end the stream
                # normally so the response completes and uvicorn exits at once.
                await shutdown.wait()
                stream.end(CLOSED)

            tasks.start_soon(end_on_shutdown)
            await response(scope, receive, send)
            tasks.cancel_scope.cancel()


# ---------------------------------------------------------------- WebSocket


async def _deny(websocket: WebSocket, exc: AgentFieldError) -> None:
    """Refuse the handshake with the protocol's error body (or a close code without the
    denial-response extension)."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(error_response(exc))
    else:
        await websocket.close(WS_POLICY_VIOLATION, exc.message[:120])


async def _ws_pump(websocket: WebSocket, stream: EventStream, send_timeout: float) -> None:
    """Send each event as one JSON text frame; close when the stream ends."""
    item: StreamItem
    async for item in stream:
        if isinstance(item, Event | Reset):
            with anyio.fail_after(send_timeout):
                await websocket.send_text(item.to_json().decode())
        elif item is OVERFLOW:
            await websocket.close(
                WS_TRY_AGAIN_LATER, "subscriber fell behind; resume with since_id"
            )
            return
        else:
            await websocket.close(WS_GOING_AWAY, "server shutting down")
            return


async def _ws_wait_disconnect(websocket: WebSocket) -> None:
    """Read (and ignore) client frames until the client goes away."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return


def _ws_route(service: MemoryService) -> WebSocketRoute:
    settings = service.settings

    async def events_ws(websocket: WebSocket) -> None:
        try:
            flt = event_filter(websocket.query_params, settings)
            after_id = resume_point(websocket.headers, websocket.query_params)
            await service.ready()
            stream = service.hub.stream(
                flt,
                after_id=after_id,
                client=client_identity(websocket.scope),
                readable=readable_filter(),
            )
        except AgentFieldError as exc:
            await _deny(websocket, exc)
            return
        try:
            await stream.open()
            await websocket.accept()
            async with anyio.create_task_group() as tasks:

                async def first_to_finish(work: Any) -> None:
                    await work
                    tasks.cancel_scope.cancel()

                tasks.start_soon(
                    first_to_finish, _ws_pump(websocket, stream, settings.sse_send_timeout_seconds)
                )
                tasks.start_soon(first_to_finish, _ws_wait_disconnect(websocket))
        except* (WebSocketDisconnect, TimeoutError, OSError) as group:
            # The peer went away or stopped reading (a send timed out): nothing to tell it.
            log.debug("event websocket ended: %r", group.exceptions)
        finally:
            stream.close()

    return WebSocketRoute("/memory/events/ws", events_ws)


# ---------------------------------------------------------------- history and wiring
HISTORY_PAGES = 20
"""Pages a history request reads at most to fill ``limit`` with events its key may read."""


async def readable_history(
    store: Store, flt: EventFilter, *, since_us: int | None, since_id: int | None, limit: int
) -> list[Event]:
    """The history, without the events the request's key may not read. Paging forward
    (``since_id``), unreadable events are skipped until ``limit`` readable ones are found
    (or :data:`HISTORY_PAGES` pages were read); the newest-``limit`` form may answer fewer."""
    readable = readable_filter()
    events = await store.history(flt, since_us=since_us, since_id=since_id, limit=limit)
    if readable is None:
        return events
    kept = [e for e in events if readable(e.scope, e.scope_id)]
    pages = 1
    while since_id is not None and len(kept) < limit and len(events) == limit:
        if pages >= HISTORY_PAGES:
            break
        events = await store.history(flt, since_us=since_us, since_id=events[-1].id, limit=limit)
        kept += [e for e in events if readable(e.scope, e.scope_id)]
        pages += 1
    return kept[:limit]


def routes(service: MemoryService) -> list[Any]:
    settings = service.settings

    async def events_history(request: Request) -> Response:
        query = request.query_params
        flt = event_filter(query, settings)
        since_us = parse_since(query.get("since"))
        since_id = _event_id(query.get("since_id"), "since_id")
        limit = int_param(
            query.get("limit"), "limit", minimum=1, maximum=settings.history_max_limit, default=100
        )
        store = await service.ready()
        events = await readable_history(
            store, flt, since_us=since_us, since_id=since_id, limit=limit or 100
        )
        return json_response([e.to_dict() for e in events])

    def start_compaction() -> None:
        service.spawn(
            compact_periodically(
                service.store,
                max_age_seconds=settings.event_retention_seconds,
                max_events=settings.event_retention_count,
                interval=settings.compaction_interval_seconds,
            )
        )

    service.on_start(start_compaction)
    return [
        Route("/memory/events/sse", _SSEEndpoint(service), methods=["GET"]),
        _ws_route(service),
        Route("/memory/events/history", events_history, methods=["GET"]),
    ]
