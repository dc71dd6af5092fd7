"""Vector writes are change events like key-value writes (never carrying the embedding);
clearing a scope removes its vectors with one delete event each. Both backends."""

from __future__ import annotations

import asyncio

from agentfield_asgi.codec import loads
from agentfield_asgi.events import EventFilter
from agentfield_asgi.store.base import ClearOp, Event

from .conftest import VectorAPI


class Collector:
    """A store watcher that keeps every event and lets a test wait for a count of them."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._changed = asyncio.Event()

    def __call__(self, batch: list[Event]) -> None:
        self.events.extend(batch)
        self._changed.set()

    async def wait_for(self, count: int) -> list[Event]:
        async with asyncio.timeout(20):
            while len(self.events) < count:
                self._changed.clear()
                await self._changed.wait()
        await asyncio.sleep(0.2)  # nothing more is expected: give extras a chance to show up
        return self.events


async def test_set_and_delete_emit_events_without_the_embedding(service, client) -> None:
    collector = Collector()
    unwatch = service.store.watch(collector)
    sub = service.hub.subscribe(EventFilter(patterns=("doc*",), scope="session"))
    api = VectorAPI(client).with_headers(X_Session_ID="s1", X_Agent_Node_ID="agent-7")
    embedding = [0.123456, 0.654321, 0.5]
    assert (await api.set("doc1", embedding, {"title": "first"})).status_code == 200
    assert (await api.set("doc1", [0.0, 1.0, 0.0])).status_code == 200
    assert (await api.delete("doc1")).status_code == 204
    assert (await api.delete("doc1")).status_code == 204  # absent: no event
    assert (await api.set("other", [1.0, 0.0, 0.0])).status_code == 200
    seen = await collector.wait_for(4)
    unwatch()
    assert [(e.key, e.action) for e in seen] == [
        ("doc1", "set"),
        ("doc1", "set"),
        ("doc1", "delete"),
        ("other", "set"),
    ]
    first, second, deleted, _ = seen
    assert (first.scope, first.scope_id) == ("session", "s1")
    assert first.data == {"metadata": {"title": "first"}, "dimension": 3}
    assert first.previous_data is None
    assert second.data == {"metadata": {}, "dimension": 3}
    assert second.previous_data == {"metadata": {"title": "first"}, "dimension": 3}
    assert deleted.data is None and deleted.previous_data == {"metadata": {}, "dimension": 3}
    for event in seen:
        assert event.metadata["kind"] == "vector"
        assert event.metadata["agent_id"] == "agent-7"
        wire = event.to_json()
        assert b"embedding" not in wire and b"0.123456" not in wire
        assert loads(wire)["type"] == "memory_change"
    assert [e.id for e in seen] == sorted(e.id for e in seen)
    # the hub delivers them to subscribers like any change (pattern and scope filters apply)
    queued = [sub.queue.get_nowait() for _ in range(sub.queue.qsize())]
    assert [(e.key, e.action) for e in queued] == [
        ("doc1", "set"),
        ("doc1", "set"),
        ("doc1", "delete"),
    ]
    # and they are in the history
    history = await service.store.history(
        EventFilter(scope="session"), since_us=None, since_id=None, limit=10
    )
    assert [(e.key, e.action) for e in history][-4:] == [(e.key, e.action) for e in seen]


async def test_clear_removes_the_scopes_vectors_with_delete_events(service, client) -> None:
    workflow = VectorAPI(client).with_headers(X_Workflow_ID="wf-9")
    other = VectorAPI(client).with_headers(X_Workflow_ID="wf-10")
    await workflow.set("v1", [1.0, 0.0], {"n": 1})
    await workflow.set("v2", [0.0, 1.0])
    await other.set("v3", [1.0, 0.0])
    await client.post("/api/v1/memory/set", json={"key": "kv", "data": 1}, headers=workflow.headers)
    assert await workflow.keys([1.0, 0.0]) == ["v1", "v2"]  # loaded in memory before the clear
    collector = Collector()
    unwatch = service.store.watch(collector)
    await service.store.write([ClearOp("workflow", "wf-9", {"agent_id": None})])
    seen = await collector.wait_for(3)
    unwatch()
    deletes = sorted((e.key, e.action, e.metadata.get("kind")) for e in seen)
    assert deletes == [
        ("kv", "delete", None),
        ("v1", "delete", "vector"),
        ("v2", "delete", "vector"),
    ]
    v1 = next(e for e in seen if e.key == "v1")
    assert v1.previous_data == {"metadata": {"n": 1}, "dimension": 2}
    assert all((e.scope, e.scope_id) == ("workflow", "wf-9") for e in seen)
    assert await workflow.keys([1.0, 0.0]) == []
    assert await other.keys([1.0, 0.0]) == ["v3"]
    # the emptied scope accepts a new dimension
    assert (await workflow.set("v4", [1.0, 0.0, 0.0])).status_code == 200
    assert await workflow.keys([1.0, 0.0, 0.0]) == ["v4"]
