"""Shared fixtures: backends (SQLite and a throwaway PostgreSQL), services, clients, live servers.

Every storage- and API-level test that takes ``database_url`` (or ``service``/``client``)
runs once per backend. PostgreSQL is a cluster this suite starts itself; when it
cannot start, the tests that need it fail (they never skip).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from agentfield_asgi.client import MemoryClient
from agentfield_asgi.server.app import MemoryService, create_memory_app
from agentfield_asgi.server.in_process import InProcessTransport
from agentfield_asgi.testing import (
    PostgresUnavailable,
    ServerProcess,
    ThrowawayPostgres,
    asgi_client,
    pgvector_bindir,
)
from agentfield_asgi.testing.services import ServiceFactory

BACKENDS = ["sqlite", "postgres"]


def start_postgres(**options: bool) -> ThrowawayPostgres:
    """A started throwaway cluster; the test fails (never skips) when there is none."""
    try:
        return ThrowawayPostgres(**options).start()
    except PostgresUnavailable as exc:
        pytest.fail(f"PostgreSQL is required for this test and could not be started: {exc}")


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[ThrowawayPostgres]:
    """One throwaway PostgreSQL cluster for the whole run (fsync off: no test crashes it)."""
    cluster = start_postgres()
    yield cluster
    cluster.destroy()


@pytest.fixture
def own_pg_cluster() -> Iterator[ThrowawayPostgres]:
    """A cluster of this test's own, for tests that stop or restart PostgreSQL."""
    cluster = start_postgres()
    yield cluster
    cluster.destroy()


@pytest.fixture(scope="session")
def pgvector_cluster() -> Iterator[ThrowawayPostgres]:
    """A throwaway PostgreSQL that has the pgvector extension (from the pgserver wheel)."""
    try:
        cluster = ThrowawayPostgres(bindir=pgvector_bindir()).start()
    except PostgresUnavailable as exc:
        pytest.fail(f"PostgreSQL with pgvector could not be started: {exc}", pytrace=False)
    yield cluster
    cluster.destroy()


def make_database_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A fresh, empty database: ``sqlite``, ``postgres`` or ``pgvector`` (PostgreSQL with
    the extension)."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'memory.db'}"
    name = "pgvector_cluster" if backend == "pgvector" else "pg_cluster"
    cluster: ThrowawayPostgres = request.getfixturevalue(name)
    return cluster.create_database()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A fresh, empty database on the parametrized backend."""
    return make_database_url(backend, tmp_path, request)


@pytest.fixture
async def make_service(database_url: str) -> AsyncIterator[ServiceFactory]:
    """``await make_service(**settings)`` or ``async with make_service(**settings) as
    service``: a started service on the test's fresh database, stopped afterwards."""
    factory = ServiceFactory(database_url)
    yield factory
    await factory.aclose()


@pytest.fixture
async def service(make_service: ServiceFactory) -> MemoryService:
    """A started service with the default settings."""
    return await make_service()


@pytest.fixture
async def client(service: MemoryService) -> AsyncIterator[httpx.AsyncClient]:
    """In-process HTTP client for the service (no socket)."""
    async with asgi_client(service) as c:
        yield c


@pytest.fixture
def live_server(database_url: str) -> Iterator[ServerProcess]:
    """``agentfield-asgi serve`` in a subprocess on loopback, on the parametrized backend."""
    server = ServerProcess(["--database-url", database_url]).start()
    yield server
    server.stop()


@pytest.fixture(scope="session", autouse=True)
def _isolate_env() -> None:
    for name in list(os.environ):
        if name.startswith("AGENTFIELD_"):
            del os.environ[name]


@pytest.fixture(params=["http", "in-process"])
async def memory(request: pytest.FixtureRequest, database_url: str) -> AsyncIterator[MemoryClient]:
    """The SDK's :class:`MemoryClient` over HTTP to a live server, and in process."""
    if request.param == "http":
        server = request.getfixturevalue("live_server")
        client = MemoryClient(server.url)
        yield client
        await client.aclose()
    else:
        service = create_memory_app(database_url)
        await service.start()
        client = MemoryClient(service=service)
        assert isinstance(client.transport, InProcessTransport)
        yield client
        await client.aclose()
        await service.stop()
