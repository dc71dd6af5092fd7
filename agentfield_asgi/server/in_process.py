"""The in-process transport: the memory service lives in this process.

A sibling of the HTTP transport (both implement
:class:`~agentfield_asgi.client.transports.base.Transport`), kept with the server it
calls. The memory operations call the same functions as the routes (same validation)
straight against the store, with no HTTP; any other path (node registration, execute,
and routes added later) is dispatched to the service's ASGI app without a socket.
Change events come from the service's event hub, as objects (no JSON in between).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import TYPE_CHECKING, Any

import httpx

from ..client.change_events import Filter, MemoryChangeEvent, StreamReset
from ..client.transports.base import (
    API_PREFIX,
    DEFAULT_TIMEOUT,
    EventItem,
    EventSource,
    Reply,
    Transport,
)
from ..client.transports.http import HTTPTransport
from ..codec import format_ts
from ..context import ExecutionContext
from ..errors import AgentFieldError, InvalidJSON
from ..events import Reset
from ..store.base import Event, EventFilter, Record
from . import memory_routes as ops
from .access import carry

if TYPE_CHECKING:
    from .app import MemoryService

# Memory operations the in-process transport runs directly (no HTTP).
_DIRECT: dict[tuple[str, str], str] = {
    ("POST", f"{API_PREFIX}/memory/set"): "set",
    ("POST", f"{API_PREFIX}/memory/get"): "get",
    ("POST", f"{API_PREFIX}/memory/delete"): "delete",
    ("GET", f"{API_PREFIX}/memory/list"): "list",
}


def _record_body(record: Record) -> dict[str, Any]:
    return {**record.to_dict(), "data": record.data}


async def _run_direct(
    service: MemoryService, op: str, body: Any, params: Mapping[str, str], ctx: ExecutionContext
) -> Reply:
    if op == "list":
        records, cursor = await ops.apply_list(service, params, ctx)
        headers = {"X-Next-Cursor": cursor} if cursor else {}
        return Reply(200, [_record_body(r) for r in records], headers)
    if not isinstance(body, dict):
        raise InvalidJSON("request body must be a JSON object")
    if op == "delete":
        await ops.apply_delete(service, body, ctx)
        return Reply(204)
    apply = ops.apply_set if op == "set" else ops.apply_get
    return Reply(200, _record_body(await apply(service, body, ctx)))


class InProcessTransport(Transport):
    """Talks to a :class:`~agentfield_asgi.server.app.MemoryService` in this process.

    Memory set/get/delete/list run directly against the store (the routes' own
    validation functions, no HTTP); other paths go through the service's ASGI app
    in memory, so every route works here too.
    """

    def __init__(self, service: MemoryService, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.service = service
        self.timeout = timeout
        # Every other path: the service's own app, in memory. No key: a call runs with the
        # access of its caller's context (full outside a keyed request), like the direct
        # operations.
        self._asgi = HTTPTransport(
            "http://agentfield.in-process",
            timeout=timeout,
            transport=httpx.ASGITransport(app=carry(service.app)),
        )

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_seconds: float | None = None,
    ) -> Reply:
        op = _DIRECT.get((method.upper(), path))
        if op is None:
            return await self._asgi.request(
                method,
                path,
                json=json,
                params=params,
                headers=headers,
                timeout_seconds=timeout_seconds,
            )
        ctx = ExecutionContext.from_headers(dict(headers or {}))
        try:
            return await _run_direct(self.service, op, json, params or {}, ctx)
        except AgentFieldError as exc:
            return Reply(exc.status, exc.to_body())

    def event_source(self, read_timeout: float) -> HubReader:
        return HubReader(self.service)

    async def aclose(self) -> None:
        await self._asgi.aclose()


def change_event(event: Event) -> MemoryChangeEvent:
    """The SDK's event for a stored one: the fields of the protocol's event object."""
    return MemoryChangeEvent(
        id=str(event.id),
        type="memory_change",
        timestamp=format_ts(event.ts_us),
        scope=event.scope,
        scope_id=event.scope_id,
        key=event.key,
        action=event.action,
        data=event.data,
        previous_data=event.previous_data,
        metadata=dict(event.metadata),
    )


class HubReader(EventSource):
    """The event hub of a memory service in this process (no HTTP)."""

    def __init__(self, service: MemoryService) -> None:
        self.service = service
        self._opened = False

    async def open(
        self, flt: Filter, after: int | None, headers: Mapping[str, str]
    ) -> AsyncGenerator[EventItem, None]:
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
                    yield change_event(item)
                elif isinstance(item, Reset):
                    yield StreamReset(item.reason, str(item.resume_from))
                else:  # overflow or shutdown: reconnect and resume
                    return


__all__ = ["HubReader", "InProcessTransport"]
