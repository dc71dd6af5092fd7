"""LangGraph long-term memory (``BaseStore``) on agentfield-asgi: ``pip install
"agentfield-asgi[langgraph]"``. See ``docs/langgraph.md``."""

from .store import AgentFieldStore

__all__ = ["AgentFieldStore"]
