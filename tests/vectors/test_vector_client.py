"""The SDK's vector calls (MemoryClient and every scoped view) against a live server and
in process, on both backends; workflow completion removes workflow vectors."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import numpy as np
import pytest

from agentfield_asgi import ExecutionContext, MemoryAccessError, MemoryClient
from agentfield_asgi.context import reset_current_context, set_current_context
from agentfield_asgi.testing.waits import WAIT_SECONDS, wait_until

from .conftest import HIT_FIELDS


@contextmanager
def context(**ids: str) -> Iterator[ExecutionContext]:
    token = set_current_context(ExecutionContext(**ids))
    try:
        yield ExecutionContext(**ids)
    finally:
        reset_current_context(token)


async def test_lists_tuples_and_numpy_arrays(memory: MemoryClient) -> None:
    scoped = memory.session("s-np")
    stored = await scoped.set_vector("list", [1.0, 0.0, 0.0], {"kind": "list"})
    assert stored == {
        "key": "list",
        "scope": "session",
        "scope_id": "s-np",
        "metadata": {"kind": "list"},
    }
    await scoped.set_vector("tuple", (0.0, 1.0, 0.0), {"kind": "tuple"})
    await scoped.set_vector("f32", np.array([0.0, 0.0, 1.0], dtype=np.float32), {"kind": "np"})
    await scoped.set_vector("f64", np.array([1.0, 1.0, 0.0]))
    await scoped.set_vector("ints", np.array([1, 0, 1]))
    await scoped.set_vector("scalars", [np.float32(0.5), np.float64(0.5), 1])
    for query in ([0.0, 0.0, 2.0], (0.0, 0.0, 2.0), np.array([0.0, 0.0, 2.0], np.float32)):
        hits = await scoped.similarity_search(query, top_k=2)
        assert [h["key"] for h in hits] == ["f32", "scalars"]  # cos 1.0, then 1/sqrt(1.5)
        assert hits[0]["score"] == pytest.approx(1.0)
        assert set(hits[0]) == HIT_FIELDS
    filtered = await scoped.similarity_search(
        np.array([1.0, 0.0, 0.0]), top_k=5, filters={"kind": "tuple"}
    )
    assert [h["key"] for h in filtered] == ["tuple"]
    with pytest.raises(TypeError):
        await scoped.set_vector("bad", ["1.0", "2.0", "3.0"])
    with pytest.raises(TypeError):
        await scoped.set_vector("bad", [True, False, True])
    with pytest.raises(TypeError):
        await scoped.similarity_search("0.1, 0.2")


async def test_every_scoped_view_and_the_unscoped_client(memory: MemoryClient) -> None:
    await memory.global_scope.set_vector("g", [1.0, 0.0])
    await memory.actor("a-1").set_vector("a", [1.0, 0.0])
    await memory.session("s-1").set_vector("s", [1.0, 0.0])
    await memory.workflow("wf-1").set_vector("w", [1.0, 0.0])
    assert [h["key"] for h in await memory.similarity_search([1.0, 0.0])] == ["g"]  # no context
    for view, key in (
        (memory.global_scope, "g"),
        (memory.actor("a-1"), "a"),
        (memory.session("s-1"), "s"),
        (memory.workflow("wf-1"), "w"),
    ):
        assert [h["key"] for h in await view.similarity_search([1.0, 0.0])] == [key]
    with context(workflow_id="wf-1", session_id="s-1"):
        # unscoped: the write target (the workflow), never a hierarchy
        assert [h["key"] for h in await memory.similarity_search([1.0, 0.0])] == ["w"]
        hits = await memory.similarity_search([1.0, 0.0], scope="session")
        assert [(h["key"], h["scope_id"]) for h in hits] == [("s", "s-1")]
        # a view without an explicit id takes the context's
        assert [h["key"] for h in await memory.session().similarity_search([1.0, 0.0])] == ["s"]
        record = await memory.set_vector("ctx", [0.5, 0.5], {"from": "context"})
        assert (record["scope"], record["scope_id"]) == ("workflow", "wf-1")
        await memory.delete_vector("w")
        assert [h["key"] for h in await memory.similarity_search([1.0, 0.0])] == ["ctx"]
    await memory.session("s-1").delete_vector("s")
    await memory.session("s-1").delete_vector("never-there")
    assert await memory.session("s-1").similarity_search([1.0, 0.0]) == []


async def test_errors_raise_memory_access_error(memory: MemoryClient) -> None:
    scoped = memory.actor("a-err")
    await scoped.set_vector("v", [1.0, 2.0, 3.0])
    with pytest.raises(MemoryAccessError) as caught:
        await scoped.set_vector("w", [1.0, 2.0])
    assert (caught.value.status, caught.value.code) == (400, "dimension_mismatch")
    with pytest.raises(MemoryAccessError) as caught:
        await scoped.similarity_search([1.0, 2.0, 3.0], top_k=0)
    assert caught.value.code == "invalid_parameter"
    with pytest.raises(MemoryAccessError) as caught:
        await scoped.set_vector("z", [])
    assert caught.value.code == "invalid_embedding"


async def test_completing_a_workflow_removes_its_vectors(live_server) -> None:
    memory = MemoryClient(live_server.url)
    try:
        await memory.workflow("wf-done").set_vector("tmp", [1.0, 0.0])
        await memory.session("s-keep").set_vector("kept", [1.0, 0.0])
        assert len(await memory.workflow("wf-done").similarity_search([1.0, 0.0])) == 1
        async with httpx.AsyncClient(base_url=live_server.url) as http:
            done = await http.post("/api/v1/workflows/wf-done/complete", json={})
            assert done.status_code == 200
        assert await memory.workflow("wf-done").similarity_search([1.0, 0.0]) == []
        assert [h["key"] for h in await memory.session("s-keep").similarity_search([1.0, 0.0])] == [
            "kept"
        ]
    finally:
        await memory.aclose()


async def test_on_change_sees_vector_changes_over_sse(live_server) -> None:
    memory = MemoryClient(live_server.url)
    seen: list = []
    memory.session("s-ev").on_change("doc*")(seen.append)
    try:
        async with memory.events:
            await memory.events.wait_connected(WAIT_SECONDS)
            docs = memory.session("s-ev")
            await docs.set_vector("doc1", np.array([0.25, 0.5]), {"title": "t"})
            await docs.delete_vector("doc1")
            await memory.session("other").set_vector("doc2", [1.0, 0.0])  # another scope id
            await wait_until(lambda: len(seen) >= 2, "vector events over SSE")
            await asyncio.sleep(0.3)  # nothing else is due
    finally:
        await memory.aclose()
    assert [(e.key, e.action, e.scope_id) for e in seen] == [
        ("doc1", "set", "s-ev"),
        ("doc1", "delete", "s-ev"),
    ]
    assert seen[0].data == {"metadata": {"title": "t"}, "dimension": 2}
    assert seen[1].previous_data == {"metadata": {"title": "t"}, "dimension": 2}
    assert all(e.metadata["kind"] == "vector" for e in seen)
