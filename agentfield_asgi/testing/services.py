"""Memory services started for a test: ``await make(**settings)`` (stopped when the
factory closes) or ``async with make(**settings) as service`` (stopped on exit)."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

from ..server.app import MemoryService, create_memory_app


class StartService:
    """One service to start on ``database_url`` with ``options`` (Settings fields)."""

    def __init__(self, factory: ServiceFactory, options: dict[str, Any]) -> None:
        self.factory = factory
        self.options = options
        self.service: MemoryService | None = None

    async def start(self) -> MemoryService:
        service = create_memory_app(self.factory.database_url, **self.options)
        await service.start()
        self.factory.started.append(service)
        self.service = service
        return service

    def __await__(self) -> Generator[Any, None, MemoryService]:
        return self.start().__await__()

    async def __aenter__(self) -> MemoryService:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        if self.service is not None:
            self.factory.started.remove(self.service)
            await self.service.stop()


class ServiceFactory:
    """``factory(**settings)``: a :class:`StartService` on one database; :meth:`aclose`
    stops every service started and not yet stopped, newest first."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.started: list[MemoryService] = []

    def __call__(self, **options: Any) -> StartService:
        return StartService(self, options)

    async def aclose(self) -> None:
        while self.started:
            await self.started.pop().stop()


ServiceMaker = Callable[..., StartService]

__all__ = ["ServiceFactory", "ServiceMaker", "StartService"]
