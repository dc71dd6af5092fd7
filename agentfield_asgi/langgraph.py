"""``from agentfield_asgi.langgraph import AgentFieldStore`` (needs the ``langgraph`` extra)."""

from .integrations.langgraph import AgentFieldStore

__all__ = ["AgentFieldStore"]
