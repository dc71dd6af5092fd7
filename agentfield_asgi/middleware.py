"""Execution context in and out of a service.

Inbound: :class:`ExecutionContextMiddleware`, a plain ASGI middleware (HTTP, SSE and
WebSocket alike; it never touches ``receive``/``send``, so nothing is buffered) that
reads the context headers of each request, starts a new workflow when none arrives,
and sets the context variable for the request's duration.

Outbound: :func:`inject_context` (an httpx event hook) and
:class:`ContextPropagatingTransport` (an httpx transport wrapper) add the current
context's headers to every request an ``httpx.AsyncClient`` sends, unless the request
already sets them. The library's own clients use the same function.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .context import (
    ExecutionContext,
    current_context,
    new_execution_id,
    reset_current_context,
    set_current_context,
)

log = logging.getLogger("agentfield_asgi.middleware")

SCOPE_CONTEXT_KEY = "agentfield.context"
"""ASGI scope key holding the request's :class:`ExecutionContext`."""
SCOPE_NEW_WORKFLOW_KEY = "agentfield.new_workflow"
"""ASGI scope key: True when this request started its workflow (no workflow id arrived)."""


def context_from_scope(scope: Scope, node_id: str | None = None) -> tuple[ExecutionContext, bool]:
    """The context a request runs in, and whether it starts a new workflow.

    ``node_id`` (the node serving the request) replaces the caller's ``X-Agent-Node-ID``,
    so this node's own outbound calls and memory writes name it.
    """
    incoming = ExecutionContext.from_headers(scope.get("headers") or ())
    node = node_id or incoming.agent_node_id
    if not incoming.workflow_id:
        ctx = ExecutionContext.new_root(
            session_id=incoming.session_id, actor_id=incoming.actor_id, agent_node_id=node
        )
        return ctx, True
    updates: dict[str, str | None] = {"agent_node_id": node}
    if not incoming.execution_id:
        updates["execution_id"] = new_execution_id()
    if not incoming.root_workflow_id:
        updates["root_workflow_id"] = incoming.workflow_id
    return incoming.with_updates(**updates), False


WorkflowEndHook = Callable[[ExecutionContext, bool], Awaitable[Any]]
"""``on_workflow_end(ctx, failed)``: called when a request that started a workflow ends."""


class ExecutionContextMiddleware:
    """Sets :func:`~agentfield_asgi.context.current_context` for each HTTP/WebSocket request.

    ``app.add_middleware(ExecutionContextMiddleware)`` in Starlette/FastAPI, or wrap any
    ASGI app: ``ExecutionContextMiddleware(app, node_id="support-agent")``.

    ``on_workflow_end`` (e.g. ``agent.complete_workflow``) is awaited after a request
    that started its own workflow has been answered, with ``failed`` true when it
    raised or answered 5xx; the control plane then removes the workflow's memory.
    Nested inside another instance (an agent mounted in a host that has the
    middleware), it keeps the outer request's context: one request, one workflow.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        node_id: str | None = None,
        on_workflow_end: WorkflowEndHook | None = None,
    ) -> None:
        self.app = app
        self.node_id = node_id
        self.on_workflow_end = on_workflow_end

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        outer: ExecutionContext | None = scope.get(SCOPE_CONTEXT_KEY)
        if outer is not None:
            ctx, started = (
                (outer.with_updates(agent_node_id=self.node_id) if self.node_id else outer),
                False,
            )
        else:
            ctx, started = context_from_scope(scope, self.node_id)
        # A copy: the caller's scope is not ours to change.
        scope = {**scope, SCOPE_CONTEXT_KEY: ctx, SCOPE_NEW_WORKFLOW_KEY: started}
        token = set_current_context(ctx)
        try:
            if started and self.on_workflow_end is not None:
                await self._run_root(ctx, scope, receive, send, self.on_workflow_end)
            else:
                await self.app(scope, receive, send)
        finally:
            reset_current_context(token)

    async def _run_root(
        self,
        ctx: ExecutionContext,
        scope: Scope,
        receive: Receive,
        send: Send,
        hook: WorkflowEndHook,
    ) -> None:
        status = 0

        async def watch_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch_status)
        except BaseException:
            await _end_workflow(hook, ctx, failed=True)
            raise
        await _end_workflow(hook, ctx, failed=status >= 500)


async def _end_workflow(hook: WorkflowEndHook, ctx: ExecutionContext, *, failed: bool) -> None:
    try:
        await hook(ctx, failed)
    except Exception:
        log.exception("on_workflow_end failed for workflow %s", ctx.workflow_id)


def apply_context(request: httpx.Request, ctx: ExecutionContext | None = None) -> None:
    """Add ``ctx``'s headers (default: the current context) to ``request`` where absent."""
    ctx = ctx if ctx is not None else current_context()
    if ctx is None:
        return
    for name, value in ctx.to_headers().items():
        if name not in request.headers:
            request.headers[name] = value


async def _context_hook(request: httpx.Request) -> None:
    apply_context(request)


def inject_context(client: httpx.AsyncClient) -> httpx.AsyncClient:
    """Make ``client`` send the current execution context's headers on every request.

    Returns the same client. Headers a request sets itself are left alone.
    """
    hooks = client.event_hooks
    if _context_hook not in hooks["request"]:
        hooks["request"] = [*hooks["request"], _context_hook]
        client.event_hooks = hooks
    return client


class ContextPropagatingTransport(httpx.AsyncBaseTransport):
    """Wraps an httpx transport, adding the current context's headers to each request:
    ``httpx.AsyncClient(transport=ContextPropagatingTransport())``."""

    def __init__(self, wrapped: httpx.AsyncBaseTransport | None = None, **options: Any) -> None:
        self.wrapped = wrapped if wrapped is not None else httpx.AsyncHTTPTransport(**options)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        apply_context(request)
        return await self.wrapped.handle_async_request(request)

    async def aclose(self) -> None:
        await self.wrapped.aclose()


__all__ = [
    "SCOPE_CONTEXT_KEY",
    "SCOPE_NEW_WORKFLOW_KEY",
    "ContextPropagatingTransport",
    "ExecutionContextMiddleware",
    "WorkflowEndHook",
    "apply_context",
    "context_from_scope",
    "inject_context",
]
