"""A host Starlette application with the memory service mounted at ``/agentfield``.

Tests build it in process with :func:`build_host`, and serve the module-level ``app`` with
uvicorn (``mount_host:app``), configured by environment: ``AGENTFIELD_DATABASE_URL`` for
the storage, ``MOUNT_HOST_LIFESPAN=1`` to compose the memory lifespan into the host's.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from agentfield_asgi import MemoryService, create_memory_app


def count_opens(memory: MemoryService) -> list[int]:
    """Count how often the service opens its storage (the list's one item); each open
    first yields to the loop for a while, so concurrent first requests overlap."""
    opened = [0]
    original = memory.store.open

    async def counting_open() -> None:
        opened[0] += 1
        await asyncio.sleep(0.05)
        await original()

    memory.store.open = counting_open  # type: ignore[method-assign]
    return opened


def build_host(memory: MemoryService, *, compose_lifespan: bool) -> Starlette:
    """The host: its own ``/hello`` route, and the memory app mounted at ``/agentfield``."""
    opened = count_opens(memory)

    async def hello(request: Request) -> JSONResponse:
        return JSONResponse({"host": "ok", "memory_started": memory.started, "opens": opened[0]})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with memory.lifespan(app):
            yield

    return Starlette(
        routes=[Route("/hello", hello), Mount("/agentfield", app=memory.app)],
        lifespan=lifespan if compose_lifespan else None,
    )


app = build_host(create_memory_app(), compose_lifespan=os.environ.get("MOUNT_HOST_LIFESPAN") == "1")
