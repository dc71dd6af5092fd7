"""The memory SDK: :class:`MemoryClient` and its scoped views, over one transport.

Unscoped calls send the current execution context's headers, so the server
resolves them (an unscoped ``get`` searches workflow -> session -> actor -> global
in one query). Scoped views send their scope id in the scope's header and the
scope name in the body, exactly as AgentField's SDK does.

Both classes share :class:`BaseMemoryClient`: one definition of every operation,
one header rule and one error rule, whichever transport sits underneath.
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ..context import (
    HEADER_ACTOR_ID,
    HEADER_AGENT_NODE_ID,
    SCOPE_HEADERS,
    ExecutionContext,
    current_context,
)
from ..errors import MemoryAccessError
from ..store.base import GLOBAL_SCOPE_ID, SCOPES, write_target
from .subscriptions import Handler, MemoryEvents
from .transports.base import API_PREFIX, DEFAULT_TIMEOUT, Reply, Transport
from .transports.http import shared_http_transport


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
        events: MemoryEvents | None = None,
    ) -> None:
        self.transport = transport
        self.agent_node_id = agent_node_id
        self.default_actor_id = default_actor_id
        self.timeout = timeout
        self._bound_scope = bound_scope
        self._bound_scope_id = bound_scope_id
        self.events = events if events is not None else MemoryEvents(transport, self.headers)
        """Change subscriptions and event history (shared with this client's scoped views)."""

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
            events=self.events,
        )

    def on_change(
        self, patterns: str | Sequence[str] | None = None
    ) -> Callable[[Handler], Handler]:
        """Decorator: call the function (sync or async) with each change to keys matching
        ``patterns`` (a glob or a list of globs), exactly once and in order; on a scoped view
        only changes in that scope id. See :class:`~agentfield_asgi.client.MemoryEvents`."""
        return self.events.on_change(patterns)

    # ------------------------------------------------------------ operations
    async def set(
        self,
        key: str,
        data: Any,
        *,
        scope: str | None = None,
        scope_id: str | None = None,
        if_version: int | None = None,
        ttl_seconds: float | None = None,
    ) -> dict[str, Any]:
        """Store ``data`` (any JSON value, ``None`` included); returns the stored record.

        ``if_version`` (ext): write only if the record's current version is this one
        (0: only if the key is absent); otherwise :class:`MemoryAccessError` with status
        412 and the current record in ``details["current"]``. ``ttl_seconds`` (ext): the
        key expires after that many seconds."""
        body: dict[str, Any] = {"key": key, "data": data}
        if if_version is not None:
            body["if_version"] = if_version
        if ttl_seconds is not None:
            body["ttl_seconds"] = ttl_seconds
        reply = await self._request("POST", "set", *self._target(scope, scope_id), body=body)
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

    async def list_keys(
        self,
        scope: str | None = None,
        scope_id: str | None = None,
        *,
        prefix: str | None = None,
        pattern: str | None = None,
        page_size: int = 1000,
    ) -> list[str]:
        """Keys of one scope, sorted (a scoped view lists its own scope); ``prefix`` or a glob
        ``pattern`` narrow it. Walks every page, ``page_size`` keys per request."""
        keys: list[str] = []
        cursor: str | None = None
        while True:
            records, cursor = await self.list_page(
                scope, scope_id, prefix=prefix, pattern=pattern, limit=page_size, cursor=cursor
            )
            keys += [item["key"] for item in records]
            if cursor is None:
                return keys

    async def list_page(
        self,
        scope: str | None = None,
        scope_id: str | None = None,
        *,
        prefix: str | None = None,
        pattern: str | None = None,
        limit: int = 1000,
        cursor: str | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of records of a scope (ext), and the cursor of the next (None at the end)."""
        scope, scope_id = self._target(scope, scope_id)
        if scope is None:
            raise TypeError("listing needs a scope: 'workflow', 'session', 'actor' or 'global'")
        params = {"scope": scope, "limit": str(limit)}
        for name, value in (("prefix", prefix), ("pattern", pattern), ("cursor", cursor)):
            if value is not None:
                params[name] = value
        reply = await self._request("GET", "list", scope, scope_id, params=params)
        return list(reply.body), reply.headers.get("X-Next-Cursor") or reply.headers.get(
            "x-next-cursor"
        )

    # ------------------------------------------------------------ extensions
    async def incr(
        self,
        key: str,
        by: int | float = 1,
        *,
        scope: str | None = None,
        scope_id: str | None = None,
    ) -> int | float:
        """Atomically add ``by`` to a numeric value (absent counts as 0); returns the new value."""
        body = {"key": key, "by": by}
        reply = await self._request("POST", "incr", *self._target(scope, scope_id), body=body)
        return reply.body["data"]  # type: ignore[no-any-return]

    async def update(
        self,
        key: str,
        fn: Callable[[Any], Any],
        *,
        retries: int = 10,
        default: Any = None,
        scope: str | None = None,
        scope_id: str | None = None,
    ) -> Any:
        """Read-modify-write without lost updates; returns the value written.

        ``fn(current)`` (sync or async; ``current`` is ``default`` when the key is absent)
        computes the new value, which is written only if nobody wrote the key meanwhile.
        If somebody did, ``fn`` runs again on their value, up to ``retries`` more times,
        then the 412 :class:`MemoryAccessError` is raised. Unscoped, it acts on the scope an
        unscoped write uses (not the hierarchy)."""
        scope, scope_id = self._target(scope, scope_id)
        if scope is None:
            ctx = ExecutionContext.from_headers(self.headers())
            scope, scope_id = write_target(ctx.workflow_id, ctx.session_id, ctx.actor_id)
        reply = await self._request("POST", "get", scope, scope_id, body={"key": key}, miss=True)
        current: dict[str, Any] | None = None if reply.status == 404 else reply.body
        for attempt in range(retries + 1):
            value = fn(default if current is None else current["data"])
            if inspect.isawaitable(value):
                value = await value
            version = 0 if current is None else int(current["version"])
            body = {"key": key, "data": value, "if_version": version}
            try:
                await self._request("POST", "set", scope, scope_id, body=body)
                return value
            except MemoryAccessError as exc:
                if exc.status != 412 or attempt == retries:
                    raise
                current = exc.details.get("current")
        raise AssertionError("unreachable")

    async def set_many(
        self,
        items: Mapping[str, Any],
        *,
        scope: str | None = None,
        scope_id: str | None = None,
        ttl_seconds: float | None = None,
    ) -> list[dict[str, Any]]:
        """Store several keys in one transaction (ext): all are written or none."""
        scope, scope_id = self._target(scope, scope_id)
        extra: dict[str, Any] = {} if scope is None else {"scope": scope}
        if ttl_seconds is not None:
            extra["ttl_seconds"] = ttl_seconds
        ops = [{"op": "set", "key": k, "data": v, **extra} for k, v in items.items()]
        reply = await self._request("POST", "batch", scope, scope_id, body={"ops": ops})
        return reply.body["results"]  # type: ignore[no-any-return]

    async def get_many(
        self, keys: Iterable[str], *, scope: str | None = None, scope_id: str | None = None
    ) -> dict[str, Any]:
        """Values of several keys in one round trip (ext), resolved like :meth:`get`;
        missing keys are absent from the result (a stored ``None`` is present)."""
        body = {"keys": list(keys)}
        reply = await self._request("POST", "get_many", *self._target(scope, scope_id), body=body)
        return {key: record["data"] for key, record in reply.body["records"].items()}

    # ------------------------------------------------------------ vectors
    async def set_vector(
        self,
        key: str,
        embedding: Sequence[float] | Any,
        metadata: dict[str, Any] | None = None,
        *,
        scope: str | None = None,
        scope_id: str | None = None,
    ) -> dict[str, Any]:
        """Store an embedding (list, tuple or 1-D numpy array) with optional ``metadata``,
        replacing any vector under ``key``; returns ``{"key", "scope", "scope_id", "metadata"}``."""
        body: dict[str, Any] = {"key": key, "embedding": _as_floats(embedding, "embedding")}
        if metadata is not None:
            body["metadata"] = metadata
        reply = await self._request("POST", "vector/set", *self._target(scope, scope_id), body=body)
        return reply.body  # type: ignore[no-any-return]

    async def delete_vector(
        self, key: str, *, scope: str | None = None, scope_id: str | None = None
    ) -> None:
        """Remove the vector under ``key`` (no error when absent)."""
        await self._request(
            "POST", "vector/delete", *self._target(scope, scope_id), body={"key": key}
        )

    async def similarity_search(
        self,
        query_embedding: Sequence[float] | Any,
        top_k: int = 10,
        filters: dict[str, Any] | None = None,
        *,
        scope: str | None = None,
        scope_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """The ``top_k`` stored vectors nearest ``query_embedding`` in one scope, best first:
        ``{"key", "score", "distance", "metadata", "scope", "scope_id", "created_at",
        "updated_at"}`` each. ``filters`` keeps vectors whose metadata fields equal the given
        values. Unscoped, it searches the scope an unscoped write uses (never a hierarchy)."""
        body = {
            "query_embedding": _as_floats(query_embedding, "query_embedding"),
            "top_k": top_k,
            "filters": filters or {},
        }
        reply = await self._request(
            "POST", "vector/search", *self._target(scope, scope_id), body=body
        )
        return reply.body  # type: ignore[no-any-return]

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


def _as_floats(values: Any, name: str) -> list[float | int]:
    """A list, tuple or 1-D numpy array of numbers as a JSON-ready list (numpy via ``tolist``).

    Booleans and strings are refused here rather than silently converted."""
    if hasattr(values, "tolist") and getattr(values, "ndim", 1) == 1:
        values = values.tolist()
    if isinstance(values, str | bytes | dict) or not isinstance(values, Sequence):
        raise TypeError(f"{name} must be a sequence of numbers, not {type(values).__name__}")
    out: list[float | int] = []
    for x in values:
        if type(x) is float or type(x) is int:
            out.append(x)
        elif isinstance(x, numbers.Real) and not isinstance(x, bool):
            out.append(float(x))  # numpy scalars inside a list or tuple
        else:
            raise TypeError(f"{name} must contain only numbers, not {type(x).__name__}")
    return out


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
            if service is not None:  # the service hands out its in-process transport
                transport = service.in_process_transport(timeout=timeout)
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
        events: MemoryEvents | None = None,
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
            events=events,
        )
        self.events = self.events.bound(scope, self.scope_id)

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

    async def clear(self) -> int:
        """Remove every key of this scope id in one transaction (ext), a delete event per
        key; returns how many were removed."""
        reply = await self._request("POST", "clear", self.scope, self.scope_id, body={})
        return int(reply.body["deleted"])


__all__ = ["BaseMemoryClient", "MemoryClient", "ScopedMemoryClient"]
