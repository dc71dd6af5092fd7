"""Fixtures for vector memory: three backends, a service per metric, a small HTTP helper.

Vector tests run on SQLite, on Debian's PostgreSQL (no pgvector: the exact in-memory
mode) and on the PostgreSQL bundled by the ``pgserver`` wheel (pgvector: HNSW mode).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentfield_asgi.server.app import MemoryService, create_memory_app
from agentfield_asgi.testing import PostgresUnavailable, ThrowawayPostgres, pgvector_bindir

VECTOR_BACKENDS = ["sqlite", "postgres", "pgvector"]


@pytest.fixture(scope="session")
def pgvector_cluster() -> Iterator[ThrowawayPostgres]:
    """A throwaway PostgreSQL that has the pgvector extension (from the pgserver wheel)."""
    try:
        cluster = ThrowawayPostgres(bindir=pgvector_bindir()).start()
    except PostgresUnavailable as exc:
        pytest.fail(f"PostgreSQL with pgvector could not be started: {exc}", pytrace=False)
    yield cluster
    cluster.destroy()


@pytest.fixture(params=VECTOR_BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A fresh, empty database on the parametrized backend (pgvector included)."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'memory.db'}"
    name = "pgvector_cluster" if backend == "pgvector" else "pg_cluster"
    cluster: ThrowawayPostgres = request.getfixturevalue(name)
    return cluster.create_database()


API = "/api/v1/memory/vector"
HIT_FIELDS = {
    "scope",
    "scope_id",
    "key",
    "score",
    "distance",
    "metadata",
    "created_at",
    "updated_at",
}
"""The fields of a search hit (AgentField's protocol)."""


class VectorAPI:
    """The three vector routes on any httpx client (in-process or live)."""

    def __init__(self, client: httpx.AsyncClient, headers: dict[str, str] | None = None) -> None:
        self.client = client
        self.headers = headers or {}

    def with_headers(self, **headers: str) -> VectorAPI:
        return VectorAPI(self.client, {k.replace("_", "-"): v for k, v in headers.items()})

    async def set(
        self, key: str, embedding: Any, metadata: Any = None, **extra: Any
    ) -> httpx.Response:
        body: dict[str, Any] = {"key": key, "embedding": embedding, **extra}
        if metadata is not None:
            body["metadata"] = metadata
        return await self.client.post(f"{API}/set", json=body, headers=self.headers)

    async def delete(self, key: str, **extra: Any) -> httpx.Response:
        return await self.client.post(
            f"{API}/delete", json={"key": key, **extra}, headers=self.headers
        )

    async def search(self, query: Any, **extra: Any) -> httpx.Response:
        body = {"query_embedding": query, **extra}
        return await self.client.post(f"{API}/search", json=body, headers=self.headers)

    async def keys(self, query: Any, **extra: Any) -> list[str]:
        response = await self.search(query, **extra)
        assert response.status_code == 200, response.text
        return [hit["key"] for hit in response.json()]


@pytest.fixture
async def make_service(database_url: str) -> AsyncIterator[Callable[..., Awaitable[MemoryService]]]:
    """``await make_service(vector_metric="l2")``: a started service on the test's database."""
    services: list[MemoryService] = []

    async def make(**options: Any) -> MemoryService:
        service = create_memory_app(database_url, **options)
        await service.start()
        services.append(service)
        return service

    yield make
    for service in reversed(services):
        await service.stop()


@pytest.fixture
def vectors(client: httpx.AsyncClient) -> VectorAPI:
    """The vector routes of the default (cosine) service, no context headers."""
    return VectorAPI(client)


def client_for(service: MemoryService) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=service.app), base_url="http://memory"
    )
