"""The public ``agentfield`` SDK's vector calls, unchanged, against a live server."""

from __future__ import annotations

import numpy as np
import pytest

from .sdk import RUN, SDK, SESSION, MemoryAccessError


async def test_set_vector_and_similarity_search_as_an_agent_does(sdk: SDK) -> None:
    memory = sdk.app_memory
    await memory.set_vector("refund", [0.9, 0.1, 0.0], metadata={"topic": "billing"})
    await memory.set_vector("reset", (0.0, 0.2, 0.9), metadata={"topic": "account"})
    await memory.set_vector("invoice", np.array([0.8, 0.3, 0.1], dtype=np.float32))

    hits = await memory.similarity_search(np.array([1.0, 0.0, 0.0]), top_k=2)
    assert [h["key"] for h in hits] == ["refund", "invoice"]
    assert hits[0]["score"] > hits[1]["score"]
    assert (hits[0]["scope"], hits[0]["scope_id"]) == ("workflow", RUN)  # the run's workflow
    assert hits[0]["metadata"] == {"topic": "billing"}
    assert set(hits[0]) >= {"key", "score", "distance", "metadata", "created_at", "updated_at"}

    billing = await memory.similarity_search([0.0, 0.0, 1.0], top_k=5, filters={"topic": "billing"})
    assert [h["key"] for h in billing] == ["refund"]

    await memory.delete_vector("invoice")
    assert [h["key"] for h in await memory.similarity_search([1.0, 0.0, 0.0])] == [
        "refund",
        "reset",
    ]


async def test_scoped_vector_calls(sdk: SDK) -> None:
    session = sdk.app_memory.session(SESSION)
    await session.set_vector("pref", [0.0, 1.0])
    await sdk.app_memory.global_scope.set_vector("kb", [1.0, 0.0])
    assert [h["key"] for h in await session.similarity_search([0.0, 1.0])] == ["pref"]
    world = await sdk.app_memory.global_scope.similarity_search([0.0, 1.0], top_k=3)
    assert [(h["key"], h["scope_id"]) for h in world] == [("kb", "global")]
    # explicit scope on the interface, as its docstring shows
    explicit = await sdk.app_memory.similarity_search([0.0, 1.0], scope="session", scope_id=SESSION)
    assert [h["key"] for h in explicit] == ["pref"]
    # the run's workflow holds none of them: searches never climb the hierarchy
    assert await sdk.app_memory.similarity_search([0.0, 1.0]) == []
    await session.delete_vector("pref")
    assert await session.similarity_search([0.0, 1.0]) == []


async def test_rejected_vectors_raise_memory_access_error(sdk: SDK) -> None:
    memory = sdk.app_memory
    await memory.set_vector("v", [1.0, 2.0, 3.0])
    with pytest.raises(MemoryAccessError):
        await memory.set_vector("w", [1.0, 2.0])  # another dimension than the scope holds
    with pytest.raises(MemoryAccessError):
        await memory.similarity_search([1.0, 2.0, 3.0], top_k=0)
    with pytest.raises(MemoryAccessError):
        await memory.set_vector("z", [])
    assert [h["key"] for h in await memory.similarity_search([1.0, 2.0, 3.0])] == ["v"]
