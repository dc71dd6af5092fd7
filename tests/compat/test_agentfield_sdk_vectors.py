"""The SDK's vector memory (set_vector, similarity_search, delete_vector) against a live server."""

from __future__ import annotations

from .sdk import RUN, SDK


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
