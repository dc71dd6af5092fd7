"""The SDK's vector memory (set_vector, similarity_search, delete_vector) against a live server."""

from __future__ import annotations

import numpy as np
import pytest

from .sdk import RUN, SDK, SESSION, MemoryAccessError


def keys(hits: list[dict]) -> list[str]:
    return [hit["key"] for hit in hits]


async def test_vectors_set_search_filter_delete(sdk: SDK) -> None:
    memory = sdk.app_memory
    await memory.set_vector("doc_a", [1.0, 0.0, 0.0], metadata={"kind": "faq"})
    await memory.set_vector("doc_b", [0.0, 1.0, 0.0], metadata={"kind": "policy"})
    await memory.set_vector("doc_c", [0.7, 0.7, 0.0])
    hits = await memory.similarity_search([0.9, 0.1, 0.0], top_k=2)
    assert keys(hits) == ["doc_a", "doc_c"]  # best first, top_k honoured
    best = hits[0]
    assert (best["scope"], best["scope_id"], best["metadata"]) == ("workflow", RUN, {"kind": "faq"})
    assert best["score"] >= hits[1]["score"]
    only_policy = await memory.similarity_search([0.9, 0.1, 0.0], filters={"kind": "policy"})
    assert keys(only_policy) == ["doc_b"]
    await memory.delete_vector("doc_a")
    assert keys(await memory.similarity_search([0.9, 0.1, 0.0], top_k=5)) == ["doc_c", "doc_b"]


async def test_scoped_vectors_stay_in_their_scope_id(sdk: SDK) -> None:
    one, two = sdk.app_memory.session("s-1"), sdk.app_memory.session("s-2")
    await one.set_vector("pref", [1.0, 0.0])
    await two.set_vector("pref_two", [1.0, 0.0])
    assert keys(await one.similarity_search([1.0, 0.0])) == ["pref"]
    assert keys(await two.similarity_search([1.0, 0.0])) == ["pref_two"]
    assert await sdk.app_memory.similarity_search([1.0, 0.0]) == []  # the run's workflow: none
    await one.delete_vector("pref")
    assert await one.similarity_search([1.0, 0.0]) == []


async def test_numpy_and_tuple_embeddings_global_and_explicit_scopes(sdk: SDK) -> None:
    memory = sdk.app_memory
    await memory.set_vector("np32", np.array([0.9, 0.1, 0.0], dtype=np.float32))
    await memory.set_vector("tuple", (0.0, 0.2, 0.9))
    hits = await memory.similarity_search(np.array([1.0, 0.0, 0.0]), top_k=1)
    assert keys(hits) == ["np32"] and hits[0]["score"] > 0.99
    await memory.global_scope.set_vector("kb", [1.0, 0.0])
    world = await memory.global_scope.similarity_search([0.0, 1.0], top_k=3)
    assert [(h["key"], h["scope_id"]) for h in world] == [("kb", "global")]
    await memory.session(SESSION).set_vector("pref", [0.0, 1.0])
    explicit = await memory.similarity_search([0.0, 1.0], scope="session", scope_id=SESSION)
    assert keys(explicit) == ["pref"]


async def test_rejected_vectors_raise_memory_access_error(sdk: SDK) -> None:
    memory = sdk.app_memory
    await memory.set_vector("v", [1.0, 2.0, 3.0])
    with pytest.raises(MemoryAccessError):
        await memory.set_vector("w", [1.0, 2.0])  # another dimension than the scope holds
    with pytest.raises(MemoryAccessError):
        await memory.similarity_search([1.0, 2.0, 3.0], top_k=0)  # AgentField reads 0 as 10
    with pytest.raises(MemoryAccessError):
        await memory.set_vector("z", [])
    assert keys(await memory.similarity_search([1.0, 2.0, 3.0])) == ["v"]
