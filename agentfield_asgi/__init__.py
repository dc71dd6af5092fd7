"""agentfield-asgi: shared, scoped, persistent memory with real-time change events for
multi-agent systems, as ASGI components that speak AgentField's protocol."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .agent import Agent
    from .client import MemoryClient, ScopedMemoryClient
    from .context import ExecutionContext, current_context
    from .errors import AgentFieldError, ExecutionError, MemoryAccessError
    from .middleware import ContextPropagatingTransport, ExecutionContextMiddleware, inject_context
    from .server.app import MemoryApp, MemoryService, create_memory_app
    from .settings import Settings

# Imported on first use, so that a process needing one part (the SQLite writer process
# imports only the store) does not pay for the web stack.
_EXPORTS = {
    "Agent": ".agent",
    "AgentFieldError": ".errors",
    "ContextPropagatingTransport": ".middleware",
    "ExecutionContext": ".context",
    "ExecutionContextMiddleware": ".middleware",
    "ExecutionError": ".errors",
    "MemoryAccessError": ".errors",
    "MemoryApp": ".server.app",
    "MemoryClient": ".client",
    "MemoryService": ".server.app",
    "ScopedMemoryClient": ".client",
    "Settings": ".settings",
    "create_memory_app": ".server.app",
    "current_context": ".context",
    "inject_context": ".middleware",
}

__all__ = [
    "Agent",
    "AgentFieldError",
    "ContextPropagatingTransport",
    "ExecutionContext",
    "ExecutionContextMiddleware",
    "ExecutionError",
    "MemoryAccessError",
    "MemoryApp",
    "MemoryClient",
    "MemoryService",
    "ScopedMemoryClient",
    "Settings",
    "create_memory_app",
    "current_context",
    "inject_context",
]
__version__ = "0.1.0"


if not TYPE_CHECKING:  # so that type checkers still reject unknown names

    def __getattr__(name: str) -> Any:
        module = _EXPORTS.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(import_module(module, __name__), name)
        globals()[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted([*globals(), *_EXPORTS])
