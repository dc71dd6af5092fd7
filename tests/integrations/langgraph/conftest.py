"""Fixtures: an ``AgentFieldStore`` over HTTP (a live server process) and in process,
on both backends, with the TTL purger off (expiry must hold without a sweep)."""

from __future__ import annotations

import hashlib
import math
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from langchain_core.embeddings import Embeddings

from agentfield_asgi.langgraph import AgentFieldStore
from agentfield_asgi.server.app import MemoryService, create_memory_app
from agentfield_asgi.testing import ServerProcess

NO_SWEEP = {"AGENTFIELD_TTL_PURGE_INTERVAL_SECONDS": "0"}


@pytest.fixture
async def lg_service(database_url: str) -> AsyncIterator[MemoryService]:
    service = create_memory_app(database_url, ttl_purge_interval_seconds=0)
    await service.start()
    yield service
    await service.stop()


@pytest.fixture
def lg_server(database_url: str) -> Iterator[ServerProcess]:
    server = ServerProcess(["--database-url", database_url], env=NO_SWEEP).start()
    yield server
    server.stop()


@pytest.fixture(params=["in-process", "http"])
async def make_store(request: pytest.FixtureRequest, database_url: str) -> AsyncIterator[Any]:
    """A factory of stores on one fresh database: ``make_store(index=..., ttl=...)``."""
    made: list[AgentFieldStore] = []
    service: MemoryService | None = None
    target: dict[str, Any]
    if request.param == "http":
        target = {"url": request.getfixturevalue("lg_server").url}
    else:
        service = create_memory_app(database_url, ttl_purge_interval_seconds=0)
        await service.start()
        target = {"service": service}

    def make(**options: Any) -> AgentFieldStore:
        made.append(AgentFieldStore(**target, **options))
        return made[-1]

    make.service = service  # type: ignore[attr-defined]
    yield make
    for store in made:
        await store.aclose()
    if service is not None:
        await service.stop()


class HashEmbeddings(Embeddings):
    """A deterministic test embedder: each word adds 1 to one of ``dims`` buckets
    (chosen by a hash of the word), then the vector is normalised."""

    def __init__(self, dims: int = 32) -> None:
        self.dims = dims

    def vector(self, text: str) -> list[float]:
        out = [0.0] * self.dims
        for word in text.lower().split():
            bucket = int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "big")
            out[bucket % self.dims] += 1.0
        norm = math.sqrt(sum(x * x for x in out)) or 1.0
        return [x / norm for x in out]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.vector(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self.vector(text)

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.embed_documents(texts)

    async def aembed_query(self, text: str) -> list[float]:
        return self.embed_query(text)
