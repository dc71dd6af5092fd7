"""The memory SDK: :class:`MemoryClient` and its scoped views, over one transport.

Unscoped calls send the current execution context's headers, so the server
resolves them (an unscoped ``get`` searches workflow -> session -> actor -> global
in one query). Scoped views send their scope id in the scope's header and the
scope name in the body, exactly as AgentField's SDK does.

Both classes share :class:`BaseMemoryClient`: one definition of every operation,
one header rule and one error rule, whichever transport sits underneath.
"""

from __future__ import annotations

from typing import Any

from ..context import HEADER_ACTOR_ID, HEADER_AGENT_NODE_ID, SCOPE_HEADERS, current_context
from ..errors import MemoryAccessError
from ..store.base import GLOBAL_SCOPE_ID, SCOPES
from .transport import (
    API_PREFIX,
    DEFAULT_TIMEOUT,
    InProcessTransport,
    Reply,
    Transport,
    shared_http_transport,
)


class BaseMemoryClient:
    """Operations common to :class:`MemoryClient` and :class:`ScopedMemoryClient`."""

    def __init__(
        self,
        transport: Transport,
        *,
        agent_node_id: str | None = None,
        default_actor_id: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        bound_scope: str | None = None,
        bound_scope_id: str | None = None,
    ) -> None:
        self.transport = transport
        self.agent_node_id = agent_node_id
        self.default_actor_id = default_actor_id
        self.timeout = timeout
        self._bound_scope = bound_scope
        self._bound_scope_id = bound_scope_id

    # ------------------------------------------------------------ scoped views
    def session(self, session_id: str | None = None) -> ScopedMemoryClient:
        """Session-scoped view (``session_id`` default: the current context's)."""
        return self._view("session", session_id)

    def actor(self, actor_id: str | None = None) -> ScopedMemoryClient:
        """Actor-scoped view (default: the context's actor, else this node's own actor id)."""
        return self._view("actor", actor_id)

    def workflow(self, workflow_id: str | None = None) -> ScopedMemoryClient:
        """Workflow-scoped view (``workflow_id`` default: the current workflow)."""
        return self._view("workflow", workflow_id)

    @property
    def global_scope(self) -> ScopedMemoryClient:
        """The global scope, shared by every agent."""
        return self._view("global", GLOBAL_SCOPE_ID)

    def _view(self, scope: str, scope_id: str | None) -> ScopedMemoryClient:
        return ScopedMemoryClient(
            self.transport,
            scope,
            scope_id,
            agent_node_id=self.agent_node_id,
            default_actor_id=self.default_actor_id,
            timeout=self.timeout,
        )

    # ------------------------------------------------------------ operations
    async def set(
        self, key: str, data: Any, *, scope: str | None = None, scope_id: str | None = None
    ) -> dict[str, Any]:
        """Store ``data`` (any JSON value, ``None`` included); returns the stored record."""
        reply = await self._request(
            "POST", "set", *self._target(scope, scope_id), body={"key": key, "data": data}
        )
        return reply.body  # type: ignore[no-any-return]

    async def get(
        self,
        key: str,
        default: Any = None,
        *,
        scope: str | None = None,
        scope_id: str | None = None,
    ) -> Any:
        """The value of ``key`` (hierarchical lookup when unscoped), or ``default`` when missing."""
        reply = await self._request(
            "POST", "get", *self._target(scope, scope_id), body={"key": key}, miss=True
        )
        return default if reply.status == 404 else reply.body["data"]

    async def exists(
        self, key: str, *, scope: str | None = None, scope_id: str | None = None
    ) -> bool:
        """Whether ``key`` is stored; exact (a stored ``None`` exists)."""
        reply = await self._request(
            "POST", "get", *self._target(scope, scope_id), body={"key": key}, miss=True
        )
        return reply.status != 404

    async def delete(
        self, key: str, *, scope: str | None = None, scope_id: str | None = None
    ) -> None:
        """Remove ``key`` (no error when absent)."""
        await self._request("POST", "delete", *self._target(scope, scope_id), body={"key": key})

    async def list_keys(self, scope: str | None = None, scope_id: str | None = None) -> list[str]:
        """Keys of one scope, sorted (a scoped view lists its own scope)."""
        scope, scope_id = self._target(scope, scope_id)
        if scope is None:
            raise TypeError("list_keys needs a scope: 'workflow', 'session', 'actor' or 'global'")
        reply = await self._request("GET", "list", scope, scope_id, params={"scope": scope})
        return [item["key"] for item in reply.body]

    # ------------------------------------------------------------ plumbing
    def _target(self, scope: str | None, scope_id: str | None) -> tuple[str | None, str | None]:
        if self._bound_scope is None:
            if scope is not None and scope not in SCOPES:
                raise ValueError(f"unknown scope {scope!r}; expected one of {', '.join(SCOPES)}")
            return scope, scope_id
        if scope is not None or scope_id is not None:
            raise TypeError("a scoped memory client's scope is fixed; use the unscoped client")
        return self._bound_scope, self._bound_scope_id

    def headers(self, scope: str | None = None, scope_id: str | None = None) -> dict[str, str]:
        """The headers a call with this scope sends: the current context's, this node's id,
        the default actor (when the context has none) and the explicit scope id."""
        ctx = current_context()
        headers = ctx.to_headers() if ctx is not None else {}
        if self.agent_node_id and HEADER_AGENT_NODE_ID not in headers:
            headers[HEADER_AGENT_NODE_ID] = self.agent_node_id
        if self.default_actor_id and HEADER_ACTOR_ID not in headers:
            headers[HEADER_ACTOR_ID] = self.default_actor_id
        if scope_id is not None and scope in SCOPE_HEADERS:
            headers[SCOPE_HEADERS[scope]] = scope_id
        return headers

    async def _request(
        self,
        method: str,
        operation: str,
        scope: str | None,
        scope_id: str | None,
        *,
        body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
        miss: bool = False,
    ) -> Reply:
        """One call to ``/api/v1/memory/<operation>`` for an already resolved scope."""
        if body is not None and scope is not None:
            body["scope"] = scope
        reply = await self.transport.request(
            method,
            f"{API_PREFIX}/memory/{operation}",
            json=body,
            params=params,
            headers=self.headers(scope, scope_id),
            timeout_seconds=self.timeout,
        )
        if reply.ok or (miss and _is_key_miss(reply)):
            return reply
        message, code, details = reply.error_fields()
        raise MemoryAccessError(message, status=reply.status, code=code, details=details)


def _is_key_miss(reply: Reply) -> bool:
    """A 404 for a missing key (not a 404 for a wrong URL, which must surface as an error)."""
    if reply.status != 404:
        return False
    details = reply.body.get("details") if isinstance(reply.body, dict) else None
    return not (isinstance(details, dict) and "path" in details)


class MemoryClient(BaseMemoryClient):
    """Scoped memory of the control plane at ``base_url`` (or of an in-process ``service``).

    ``MemoryClient("http://127.0.0.1:8080")`` talks HTTP through the process-wide pooled
    client for that URL; ``MemoryClient(service=memory)`` calls the store directly.
    ``timeout`` bounds each call (seconds); ``api_key`` is sent as ``X-API-Key``.
    ``default_actor_id`` is the actor used when the context carries none (an agent
    node passes its node id, so each node has actor memory of its own).
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        service: Any = None,
        transport: Transport | None = None,
        agent_node_id: str | None = None,
        default_actor_id: str | None = None,
    ) -> None:
        if transport is None:
            if service is not None:
                transport = InProcessTransport(service, timeout=timeout)
            elif base_url:
                transport = shared_http_transport(base_url, api_key=api_key)
            else:
                raise ValueError("MemoryClient needs a base_url, a service or a transport")
        super().__init__(
            transport,
            agent_node_id=agent_node_id,
            default_actor_id=default_actor_id,
            timeout=timeout,
        )

    async def aclose(self) -> None:
        """Close the transport's connections (a shared transport reopens on next use)."""
        await self.transport.aclose()

    async def __aenter__(self) -> MemoryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class ScopedMemoryClient(BaseMemoryClient):
    """One scope of memory: ``memory.session("user_1")``, ``.actor(id)``, ``.workflow(id)``,
    ``.global_scope``. Same operations as :class:`MemoryClient`; ``list_keys()`` lists
    this scope. A ``None`` id means the current context's id at call time."""

    def __init__(
        self,
        transport: Transport,
        scope: str,
        scope_id: str | None,
        *,
        agent_node_id: str | None = None,
        default_actor_id: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if scope not in SCOPES:
            raise ValueError(f"unknown scope {scope!r}; expected one of {', '.join(SCOPES)}")
        super().__init__(
            transport,
            agent_node_id=agent_node_id,
            default_actor_id=default_actor_id,
            timeout=timeout,
            bound_scope=scope,
            bound_scope_id=scope_id,
        )

    @property
    def scope(self) -> str:
        return self._bound_scope  # type: ignore[return-value]

    @property
    def scope_id(self) -> str | None:
        """The explicit id, or the one the current context gives (None when it has none)."""
        if self._bound_scope_id is not None:
            return self._bound_scope_id
        ctx = current_context()
        ids = {
            "workflow": ctx.workflow_id if ctx else None,
            "session": ctx.session_id if ctx else None,
            "actor": (ctx.actor_id if ctx else None) or self.default_actor_id,
        }
        return ids.get(self.scope)

    def _target(self, scope: str | None, scope_id: str | None) -> tuple[str | None, str | None]:
        super()._target(scope, scope_id)  # rejects overrides
        return self.scope, self.scope_id


__all__ = ["BaseMemoryClient", "MemoryClient", "ScopedMemoryClient"]
