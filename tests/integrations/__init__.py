"""Tests of the optional integrations (agentfield_asgi/integrations/)."""
