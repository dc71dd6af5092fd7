"""A LangGraph batch costs as few requests as the routes allow, and its writes commit
together (a failing write leaves nothing of the batch); API keys are sent."""

from __future__ import annotations

from typing import Any

import pytest
from langgraph.store.base import (
    GetOp,
    InvalidNamespaceError,
    ListNamespacesOp,
    PutOp,
    SearchOp,
)

from agentfield_asgi.errors import MemoryAccessError
from agentfield_asgi.langgraph import AgentFieldStore
from agentfield_asgi.testing import ServerProcess

from .conftest import HashEmbeddings


def _count_requests(store: AgentFieldStore) -> list[str]:
    """Record the route of every request the store sends from now on."""
    seen: list[str] = []
    transport = store._calls.transport
    send = transport.request

    async def counting(method: str, path: str, **kwargs: Any) -> Any:
        seen.append(path.rsplit("/memory/", 1)[-1])
        return await send(method, path, **kwargs)

    transport.request = counting  # type: ignore[method-assign]
    return seen


async def test_a_mixed_batch_is_one_request_per_kind(make_store: Any) -> None:
    store = make_store(index={"dims": 16, "embed": HashEmbeddings(16), "fields": ["text"]})
    seen = _count_requests(store)
    puts = [PutOp(("a", str(i % 3)), f"k{i}", {"text": f"note {i}"}) for i in range(30)]
    await store.abatch(puts)
    # The items' vector counts (to drop left-over vectors), then 30 values and 30 vectors
    # in one transaction.
    assert seen == ["get_many", "batch"]
    plain = make_store()
    plain_seen = _count_requests(plain)
    await plain.abatch([PutOp(("p",), f"k{i}", {"v": i}) for i in range(30)])
    assert plain_seen == ["batch"]
    seen.clear()
    ops = [
        *(GetOp(("a", str(i % 3)), f"k{i}") for i in range(10)),
        SearchOp(("a",), filter={"text": "note 4"}),
        PutOp(("a", "0"), "k0", None),
        PutOp(("b",), "new", {"text": "hello"}),
    ]
    results = await store.abatch(ops)
    assert sorted(seen) == ["batch", "get_many", "query"]
    assert [r.key for r in results[:10]] == [f"k{i}" for i in range(10)]  # type: ignore[union-attr]
    assert [i.key for i in results[10]] == ["k4"]  # type: ignore[union-attr]
    seen.clear()
    await store.abatch([SearchOp(("a",), query="note 7", limit=3), ListNamespacesOp()])
    assert sorted(seen) == ["keys", "query"]


async def test_writes_of_a_batch_commit_together(make_store: Any) -> None:
    store = make_store()
    await store.aput(("t",), "kept", {"v": 1})
    too_big = {"blob": "x" * (2 * 1024 * 1024)}  # over the server's value limit
    with pytest.raises(MemoryAccessError) as refused:
        await store.abatch([PutOp(("t",), "kept", None), PutOp(("t",), "big", too_big)])
    assert refused.value.status == 413
    assert [i.key for i in await store.asearch(("t",))] == ["kept"]


def test_api_key_is_sent(database_url: str) -> None:
    args = ["--database-url", database_url, "--api-key", "sesame"]
    with ServerProcess(args) as server:
        with AgentFieldStore(server.url) as anonymous:
            with pytest.raises(MemoryAccessError) as refused:
                anonymous.put(("k",), "k", {"v": 1})
            assert refused.value.status == 401
        with AgentFieldStore(server.url, api_key="sesame") as store:
            store.put(("k",), "k", {"v": 1})
            assert store.get(("k",), "k").value == {"v": 1}  # type: ignore[union-attr]


async def test_a_bad_op_anywhere_sends_nothing(make_store: Any) -> None:
    store = make_store()
    seen = _count_requests(store)
    with pytest.raises(InvalidNamespaceError):
        await store.abatch([SearchOp(("ok",)), PutOp(("ok",), "k", {"v": 1}), GetOp(("a.b",), "k")])
    assert seen == []
