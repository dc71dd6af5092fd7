"""How the MCP server reaches memory: the SDK's transport, speaking the REST protocol.

Every tool call becomes one call of a REST route through a client
:class:`~agentfield_asgi.client.transports.Transport`: :class:`HTTPTransport` for a
remote service (``--url``), :class:`InProcessTransport` for a service in this process
(``/mcp`` on the service, ``--database-url``). So scopes, versions, TTL, limits and error
codes are the routes' own, with no second implementation here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ...client.memory import _is_key_miss
from ...client.subscriptions import MemoryEvents
from ...client.transports import API_PREFIX, Reply, Transport
from ...context import SCOPE_HEADERS, ExecutionContext
from ...store.base import GLOBAL_SCOPE_ID, SCOPES, write_target


class ToolError(Exception):
    """A failed memory call, carrying the protocol's error body (and the HTTP status)."""

    def __init__(
        self, message: str, code: str, details: dict[str, Any] | None = None, status: int = 400
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.details = details or {}
        self.status = status

    def to_body(self) -> dict[str, Any]:
        return {"error": self.message, "code": self.code, "details": self.details}


@dataclass(frozen=True, slots=True)
class Target:
    """Where one call acts: the explicit ``scope`` (or None: unscoped) and the headers."""

    scope: str | None
    headers: dict[str, str]

    def scope_id(self, scope: str) -> str | None:
        """The id ``scope`` has for this call (``global`` for the global scope)."""
        if scope == "global":
            return GLOBAL_SCOPE_ID
        return self.headers.get(SCOPE_HEADERS[scope]) if scope in SCOPE_HEADERS else None

    def write_scope(self) -> tuple[str, str | None]:
        """The explicit scope, else the scope an unscoped write uses."""
        if self.scope is not None:
            return self.scope, self.scope_id(self.scope)
        ctx = ExecutionContext.from_headers(self.headers)
        return write_target(ctx.workflow_id, ctx.session_id, ctx.actor_id)


class MemoryBackend:
    """REST calls for the tools and resources, with the server's default context.

    ``defaults``: ids every call starts from (e.g. ``--session-id``); a request's own
    context (headers of the HTTP request carrying the MCP message) overrides them, and a
    tool's ``scope`` / ``scope_id`` arguments override both.
    """

    def __init__(self, transport: Transport, defaults: ExecutionContext | None = None) -> None:
        self.transport = transport
        self.defaults = defaults or ExecutionContext(agent_node_id="mcp")
        self.events = MemoryEvents(transport, self.defaults.to_headers)

    def target(
        self, scope: Any, scope_id: Any, request_ctx: ExecutionContext | None = None
    ) -> Target:
        """Headers for a call with the tool's ``scope`` / ``scope_id`` arguments."""
        headers = self.defaults.to_headers()
        if request_ctx is not None:
            headers.update(request_ctx.to_headers())
        if scope is not None and scope not in SCOPES:
            raise ToolError(
                f"unknown scope {scope!r}; expected one of {', '.join(SCOPES)}",
                "invalid_scope",
                {"scope": scope},
            )
        if scope_id is not None:
            if not isinstance(scope_id, str) or not scope_id:
                raise ToolError("'scope_id' must be a non-empty string", "invalid_parameter")
            if scope is None:
                raise ToolError(
                    "'scope_id' needs 'scope' (which scope it is an id of)", "missing_scope"
                )
            if scope != "global":
                headers[SCOPE_HEADERS[scope]] = scope_id
        return Target(scope, headers)

    async def call(
        self,
        method: str,
        operation: str,
        target: Target,
        *,
        body: dict[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        miss_ok: bool = False,
    ) -> Reply:
        """``/api/v1/memory/<operation>``; a failure raises :class:`ToolError` (a 404 for a
        missing key is returned instead when ``miss_ok``)."""
        if body is not None and target.scope is not None:
            body = {**body, "scope": target.scope}
        reply = await self.transport.request(
            method,
            f"{API_PREFIX}/memory/{operation}",
            json=body,
            params=params,
            headers=target.headers,
        )
        if reply.ok or (miss_ok and _is_key_miss(reply)):
            return reply
        message, code, details = reply.error_fields()
        raise ToolError(message, code, details, reply.status)

    async def aclose(self) -> None:
        await self.events.stop()
        await self.transport.aclose()
