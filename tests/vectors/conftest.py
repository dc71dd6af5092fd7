"""Fixtures for vector memory: three backends and a small HTTP helper (the services,
database URLs and clients are the suite's own, from ``tests/conftest.py``).

Vector tests run on SQLite, on Debian's PostgreSQL (no pgvector: the exact in-memory
mode) and on the PostgreSQL bundled by the ``pgserver`` wheel (pgvector: HNSW mode).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from agentfield_asgi.testing import asgi_client as client_for

__all__ = ["HIT_FIELDS", "VectorAPI", "client_for"]

VECTOR_BACKENDS = ["sqlite", "postgres", "pgvector"]


@pytest.fixture(params=VECTOR_BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


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
def vectors(client: httpx.AsyncClient) -> VectorAPI:
    """The vector routes of the default (cosine) service, no context headers."""
    return VectorAPI(client)
