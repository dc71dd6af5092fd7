"""Helpers shared by the reliability tests."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from agentfield_asgi.server.app import MemoryService
from agentfield_asgi.store.base import Event, Store

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


async def wait_until(
    predicate: Callable[[], Any], message: str = "condition not met", within: float = 60.0
) -> None:
    """Poll ``predicate`` (sync or async) until true; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, message
        await asyncio.sleep(0.05)
