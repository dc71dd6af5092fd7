"""Fixtures for the reliability suite: services with chosen settings, on both backends."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from agentfield_asgi.server.app import MemoryService, create_memory_app

ServiceFactory = Callable[..., contextlib.AbstractAsyncContextManager[MemoryService]]


@pytest.fixture
def make_service(database_url: str) -> ServiceFactory:
    """``async with make_service(**settings) as service``: a started service on the
    parametrized backend's fresh database, stopped afterwards."""

    @contextlib.asynccontextmanager
    async def factory(**options: Any) -> AsyncIterator[MemoryService]:
        service = create_memory_app(database_url, **options)
        await service.start()
        try:
            yield service
        finally:
            await service.stop()

    return factory
