"""Tests of ``agentfield_asgi.langgraph.AgentFieldStore``."""
