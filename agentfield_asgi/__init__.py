"""agentfield-asgi: shared, scoped, persistent memory with real-time change events for
multi-agent systems, as ASGI components that speak AgentField's protocol."""

from .agent import Agent
from .client import MemoryClient, ScopedMemoryClient
from .context import ExecutionContext, current_context
from .errors import AgentFieldError, ExecutionError, MemoryAccessError
from .middleware import ContextPropagatingTransport, ExecutionContextMiddleware, inject_context
from .server.app import MemoryService, create_memory_app
from .settings import Settings

__all__ = [
    "Agent",
    "AgentFieldError",
    "ContextPropagatingTransport",
    "ExecutionContext",
    "ExecutionContextMiddleware",
    "ExecutionError",
    "MemoryAccessError",
    "MemoryClient",
    "MemoryService",
    "ScopedMemoryClient",
    "Settings",
    "create_memory_app",
    "current_context",
    "inject_context",
]
__version__ = "0.1.0"
