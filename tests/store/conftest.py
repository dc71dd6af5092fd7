"""Storage-level fixtures: an open :class:`Store` on each backend."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from agentfield_asgi.settings import Settings
from agentfield_asgi.store import Store, open_store


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    """An open store on a fresh database of the parametrized backend."""
    s = open_store(Settings(database_url=database_url))
    await s.open()
    yield s
    await s.close()
