"""Fixtures for the AgentField SDK compatibility tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from agentfield_asgi.testing import ServerProcess

from .sdk import ACTOR, SDK, SESSION, connect, disconnect


@pytest.fixture
async def sdk(live_server: ServerProcess) -> AsyncIterator[SDK]:
    """The SDK inside a reasoner of run ``RUN``, for session ``SESSION`` and actor ``ACTOR``."""
    handle = connect(live_server, session_id=SESSION, actor_id=ACTOR)
    yield handle
    await disconnect(handle)
