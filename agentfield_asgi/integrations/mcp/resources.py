"""Stored keys as MCP resources, and change subscriptions on them.

A key is the resource ``agentfield://{scope}/{scope_id}/{key}`` (scope id and key
percent-encoded, so any key round-trips). ``resources/subscribe`` on one starts a change
subscription of the SDK's :class:`~agentfield_asgi.client.MemoryEvents` (SSE from a
remote service, the event hub in process) filtered to that exact key, which sees every
writer of the store; each change sends ``notifications/resources/updated``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote, unquote

from ...client.subscriptions import ChangeSubscription, MemoryChangeEvent
from ...context import ExecutionContext
from ...errors import MemoryAccessError
from ...server import access
from ...store.base import SCOPES
from .backend import MemoryBackend, Target, ToolError
from .caller import Caller

log = logging.getLogger("agentfield_asgi.mcp")

URI_SCHEME = "agentfield"
URI_TEMPLATE = "agentfield://{scope}/{scope_id}/{key}"
LIST_LIMIT = 1000
"""Keys listed per scope id by ``resources/list``."""
SUBSCRIBE_TIMEOUT = 10.0


def resource_uri(scope: str, scope_id: str, key: str) -> str:
    return f"{URI_SCHEME}://{scope}/{quote(scope_id, safe='')}/{quote(key, safe='')}"


def parse_uri(uri: str) -> tuple[str, str, str]:
    """``(scope, scope_id, key)`` of a resource URI; :class:`ToolError` when it is not one."""
    prefix = f"{URI_SCHEME}://"
    parts = uri[len(prefix) :].split("/", 2) if uri.startswith(prefix) else []
    if len(parts) != 3 or parts[0] not in SCOPES or not parts[1] or not parts[2]:
        raise ToolError(
            f"not a memory resource: {uri!r} (expected {URI_TEMPLATE})",
            "invalid_resource",
            {"uri": uri},
        )
    return parts[0], unquote(parts[1]), unquote(parts[2])


def literal_pattern(key: str) -> str:
    """A glob pattern matching exactly ``key`` (its glob characters bracketed)."""
    return "".join(f"[{c}]" if c in "*?[]" else c for c in key)


def target_of(backend: MemoryBackend, uri: str) -> tuple[Target, str]:
    scope, scope_id, key = parse_uri(uri)
    return backend.target(scope, scope_id), key


async def list_resources(
    backend: MemoryBackend, request_ctx: ExecutionContext | None = None
) -> list[dict[str, Any]]:
    """The keys of each scope id this server knows (its defaults and the request's), global
    included, leaving out scope ids the API key may not read; up to :data:`LIST_LIMIT` per
    scope id."""
    base = backend.target(None, None, request_ctx)
    out: list[dict[str, Any]] = []
    for scope in SCOPES:
        scope_id = base.scope_id(scope)
        if scope_id is None:
            continue
        params = {"scope": scope, "limit": str(LIST_LIMIT)}
        try:
            reply = await backend.call("GET", "list", Target(scope, base.headers), params=params)
        except ToolError as exc:
            if exc.code == "forbidden":  # the key may not read this scope id: not listed
                continue
            raise
        for record in reply.body:
            out.append(
                {
                    "uri": resource_uri(scope, scope_id, record["key"]),
                    "name": record["key"],
                    "description": f"{scope} memory {scope_id!r}, version {record.get('version')}",
                    "mimeType": "application/json",
                }
            )
    return out


async def read_resource(backend: MemoryBackend, uri: str) -> dict[str, Any]:
    """The record (as ``memory_get`` returns it) of the key ``uri`` names."""
    target, key = target_of(backend, uri)
    reply = await backend.call("POST", "get", target, body={"key": key})
    return reply.body  # type: ignore[no-any-return]


Notify = Callable[[str], Awaitable[None]]


class Subscriptions:
    """Resource subscriptions of one MCP session: URI -> change subscription."""

    def __init__(self, backend: MemoryBackend, notify: Notify) -> None:
        self.backend = backend
        self.notify = notify
        self._subs: dict[str, ChangeSubscription] = {}

    async def subscribe(self, uri: str, caller: Caller | None = None) -> None:
        """Start watching ``uri``; returns once changes from now on will be notified.

        With a ``caller`` (an MCP session over HTTP), its API key must be allowed to read the
        scope id now (403 otherwise), and each change is notified only while it still may."""
        target, key = target_of(self.backend, uri)
        scope = target.scope or "global"
        scope_id = target.scope_id(scope) or ""
        if caller is not None:
            access.current().require("read", scope, scope_id)
        if uri in self._subs:
            return

        async def on_change(event: MemoryChangeEvent) -> None:
            if caller is not None and not caller.may_read(event.scope, event.scope_id):
                return  # the keys were reloaded since: the key may no longer read it
            try:
                await self.notify(uri)
            except Exception as exc:  # the session is gone: stop watching for it
                log.debug("resource update for %s not sent: %r", uri, exc)
                asyncio.get_running_loop().create_task(self.unsubscribe(uri))

        sub = self.backend.events.subscribe(
            literal_pattern(key), on_change, scope=scope, scope_id=target.scope_id(scope)
        )
        self._subs[uri] = sub
        await self.backend.events.start()
        try:
            await sub.wait_connected(SUBSCRIBE_TIMEOUT)
        except MemoryAccessError as exc:  # the service refused the stream (--url: 401, 403)
            await self.unsubscribe(uri)
            raise ToolError(exc.message, exc.code, exc.details, exc.status) from None
        except TimeoutError:
            await self.unsubscribe(uri)
            raise ToolError(
                "the change stream did not open in time" + (f": {sub.error}" if sub.error else ""),
                "storage_unavailable",
                status=503,
            ) from None

    async def unsubscribe(self, uri: str) -> None:
        sub = self._subs.pop(uri, None)
        if sub is not None:
            await self.backend.events.unsubscribe(sub)

    async def close(self) -> None:
        for uri in list(self._subs):
            await self.unsubscribe(uri)
