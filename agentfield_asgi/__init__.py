"""agentfield-asgi: shared, scoped, persistent memory with real-time change events for
multi-agent systems, as ASGI components that speak AgentField's protocol."""

from .context import ExecutionContext, current_context
from .errors import AgentFieldError, MemoryAccessError
from .server.app import MemoryService, create_memory_app
from .settings import Settings

__all__ = [
    "AgentFieldError",
    "ExecutionContext",
    "MemoryAccessError",
    "MemoryService",
    "Settings",
    "create_memory_app",
    "current_context",
]
__version__ = "0.1.0"
