"""OpenTelemetry spans and W3C ``traceparent`` propagation (extra ``agentfield-asgi[otel]``).

Without ``opentelemetry-api`` installed everything here is a no-op. With it, spans go to
whatever tracer provider the application configured (none configured: the API's no-op):

* :class:`TracingMiddleware` opens a SERVER span for every request to the memory service
  and to agent nodes, continuing the caller's trace from its ``traceparent`` header; memory
  routes carry the GenAI semantic-convention attributes (``gen_ai.operation.name``
  ``search_memory`` / ``update_memory`` / ``delete_memory``, ``gen_ai.agent.name``,
  ``gen_ai.conversation.id`` for the session);
* the execution gateway opens an ``invoke_agent`` CLIENT span per execution and
  :func:`inject` puts its ``traceparent`` on the forwarded call, as ``Agent.call`` and the
  SDK's HTTP transport do on theirs, so one workflow is one trace across nodes and the
  control plane.

Attributes never hold API keys or stored values.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, MutableMapping
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

try:
    from opentelemetry import propagate, trace
except ImportError:  # the [otel] extra is not installed
    trace = None  # type: ignore[assignment]
    propagate = None  # type: ignore[assignment]

TRACER = "agentfield_asgi"
MEMORY_OPERATIONS = {
    "/memory/get": "search_memory",
    "/memory/get_many": "search_memory",
    "/memory/list": "search_memory",
    "/memory/vector/search": "search_memory",
    "/memory/events/history": "search_memory",
    "/memory/set": "update_memory",
    "/memory/incr": "update_memory",
    "/memory/batch": "update_memory",
    "/memory/vector/set": "update_memory",
    "/memory/delete": "delete_memory",
    "/memory/vector/delete": "delete_memory",
    "/memory/clear": "delete_memory",
}
"""Memory routes -> ``gen_ai.operation.name`` (GenAI semantic conventions' memory operations)."""
_HEADER_ATTRIBUTES = {
    b"x-agent-node-id": "gen_ai.agent.name",
    b"x-session-id": "gen_ai.conversation.id",
    b"x-workflow-id": "agentfield.workflow.id",
    b"x-execution-id": "agentfield.execution.id",
}


def enabled() -> bool:
    """Whether opentelemetry-api is installed."""
    return trace is not None


def inject(headers: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Add the current span's ``traceparent`` (and ``tracestate``) to ``headers``."""
    if propagate is not None:
        propagate.inject(headers)
    return headers


@contextlib.contextmanager
def client_span(name: str, attributes: dict[str, Any]) -> Iterator[None]:
    """A CLIENT span around an outgoing call (no-op without OpenTelemetry)."""
    if trace is None:
        yield
        return
    tracer = trace.get_tracer(TRACER)
    with tracer.start_as_current_span(name, kind=trace.SpanKind.CLIENT, attributes=attributes):
        yield


@contextlib.contextmanager
def internal_span(name: str, attributes: dict[str, Any]) -> Iterator[None]:
    """An INTERNAL span, a root of its own (event delivery runs outside any request)."""
    if trace is None:
        yield
        return
    tracer = trace.get_tracer(TRACER)
    with tracer.start_as_current_span(name, kind=trace.SpanKind.INTERNAL, attributes=attributes):
        yield


class TracingMiddleware:
    """A SERVER span per HTTP request / WebSocket, continuing the caller's trace."""

    def __init__(self, app: ASGIApp, *, service_name: str = "agentfield-asgi") -> None:
        self.app = app
        self.service_name = service_name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if trace is None or propagate is None or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", ())}
        parent = propagate.extract(carrier)
        path = _relative_path(scope)
        method = scope.get("method", "WEBSOCKET")
        attributes: dict[str, Any] = {
            "http.request.method": method,
            "url.path": path,
            "agentfield.node": self.service_name,
        }
        operation = MEMORY_OPERATIONS.get(path.removeprefix("/api/v1"))
        if operation is not None:
            attributes["gen_ai.operation.name"] = operation
        for name, value in scope.get("headers", ()):
            attribute = _HEADER_ATTRIBUTES.get(name)
            if attribute is not None:
                attributes[attribute] = value.decode("latin-1")
        name = f"{operation} {path}" if operation else f"{method} {path}"
        tracer = trace.get_tracer(TRACER)
        with tracer.start_as_current_span(
            name, context=parent, kind=trace.SpanKind.SERVER, attributes=attributes
        ) as span:

            async def send_status(message: Message) -> None:
                if message["type"] == "http.response.start":
                    span.set_attribute("http.response.status_code", message["status"])
                    if message["status"] >= 500:
                        span.set_status(trace.StatusCode.ERROR)
                await send(message)

            await self.app(scope, receive, send_status)


def _relative_path(scope: Scope) -> str:
    path: str = scope["path"]
    root = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


__all__ = ["TracingMiddleware", "client_span", "enabled", "inject"]
