"""Helpers shared by the reliability tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx

from agentfield_asgi.server.app import MemoryService
from agentfield_asgi.store.base import Event, Store
from agentfield_asgi.testing.waits import wait_until as wait_until  # re-exported for the tests

API = "/api/v1/memory"


@contextlib.asynccontextmanager
async def http_client(service: MemoryService, **kwargs: Any) -> AsyncIterator[httpx.AsyncClient]:
    """In-process client for ``service``."""
    transport = httpx.ASGITransport(app=service.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://memory", **kwargs) as client:
        yield client


async def every_event(store: Store) -> list[Event]:
    """The whole event log, oldest first."""
    events: list[Event] = []
    while True:
        page = await store.events_after(events[-1].id if events else 0, 5000)
        events += page
        if len(page) < 5000:
            return events
