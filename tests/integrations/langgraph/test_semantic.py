"""Semantic search per ``IndexConfig`` with a deterministic embedder: same ranking and
scores as LangGraph's ``InMemoryStore`` (scores to float32 precision), filters and
namespace prefixes applied by the server, ``index=False`` and per-put fields honoured."""

from __future__ import annotations

from typing import Any

import pytest
from langgraph.store.memory import InMemoryStore

from .conftest import HashEmbeddings

DOCS = {
    ("docs", "alice"): {
        "d1": {"text": "cats purr and sleep all day", "n": 1},
        "d2": {"text": "dogs bark at the mail carrier", "n": 2},
        "d3": {"text": "cats and dogs can be friends", "n": 3},
    },
    ("docs", "bob"): {
        "d1": {"text": "stock markets fell sharply today", "n": 4},
        "d4": {"text": "sleep well and dream of cats", "n": 5},
    },
}


def _index() -> dict[str, Any]:
    return {"dims": 32, "embed": HashEmbeddings(32), "fields": ["text"]}


async def _fill(*stores: Any) -> None:
    for store in stores:
        for namespace, docs in DOCS.items():
            for key, value in docs.items():
                await store.aput(namespace, key, value)
        await store.aput(
            ("docs", "alice"), "plain", {"text": "cats cats cats", "n": 9}, index=False
        )
        await store.aput(
            ("docs", "bob"), "title", {"title": "cats", "text": "nothing", "n": 6}, ["title"]
        )


def _ranked(items: list[Any]) -> list[tuple[Any, ...]]:
    return [(i.namespace, i.key, None if i.score is None else round(i.score, 5)) for i in items]


@pytest.mark.parametrize(
    "prefix, query, flt, limit, offset",
    [
        (("docs",), "cats sleep", None, 10, 0),
        (("docs", "alice"), "cats sleep", None, 10, 0),
        (("docs",), "dogs", None, 2, 0),
        (("docs",), "dogs", None, 2, 2),
        (("docs",), "cats", {"n": {"$gte": 3}}, 10, 0),
        (("docs", "bob"), "markets", {"n": 4}, 10, 0),
    ],
)
async def test_search_ranks_like_in_memory_store(
    make_store: Any, prefix: Any, query: str, flt: Any, limit: int, offset: int
) -> None:
    ours, reference = make_store(index=_index()), InMemoryStore(index=_index())  # type: ignore[arg-type]
    await _fill(ours, reference)
    got = await ours.asearch(prefix, query=query, filter=flt, limit=limit, offset=offset)
    expected = await reference.asearch(prefix, query=query, filter=flt, limit=limit, offset=offset)
    assert _ranked(got) == _ranked(expected)
    assert got, "the case returns something to compare"
    scores = [i.score for i in got if i.score is not None]
    assert scores == sorted(scores, reverse=True)


async def test_overwrite_and_delete_replace_vectors(make_store: Any) -> None:
    store = make_store(index=_index())
    await store.aput(("v",), "k", {"text": "cats purr"})
    await store.aput(("v",), "other", {"text": "markets fell"})
    [best, *_] = await store.asearch(("v",), query="cats purr")
    assert best.key == "k" and best.score == pytest.approx(1.0, abs=1e-5)
    await store.aput(("v",), "k", {"text": "markets fell"})  # new text, new vector
    scores = {i.key: i.score for i in await store.asearch(("v",), query="cats purr")}
    assert scores["k"] == pytest.approx(scores["other"]) and scores["k"] < 0.5
    await store.aput(("v",), "k", {"text": "cats purr"}, index=False)  # vectors removed
    assert [(i.key, i.score) for i in await store.asearch(("v",), query="cats purr")][-1] == (
        "k",
        None,
    )
    await store.adelete(("v",), "k")
    assert [i.key for i in await store.asearch(("v",), query="cats purr")] == ["other"]
