"""Fixtures for event tests: live servers on the parametrized backend with chosen settings."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest

from agentfield_asgi.testing import ServerProcess


@pytest.fixture
def make_server(database_url: str) -> Iterator[Callable[..., ServerProcess]]:
    """``make_server(**settings)``: a started ``agentfield-asgi serve`` on this test's database,
    with settings given as ``AGENTFIELD_*`` variables; all stopped at the end."""
    started: list[ServerProcess] = []

    def make(
        *, port: int | None = None, args: tuple[str, ...] = (), **settings: object
    ) -> ServerProcess:
        env = {f"AGENTFIELD_{name.upper()}": str(value) for name, value in settings.items()}
        server = ServerProcess(["--database-url", database_url, *args], env=env, port=port)
        started.append(server.start())
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(60.0)) as client:
        yield client
