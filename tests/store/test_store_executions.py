"""Execution records by id (the control plane's durable executions), on both backends."""

from __future__ import annotations

from agentfield_asgi.store.base import Store


async def test_get_execution_reads_the_latest_row(store: Store) -> None:
    assert await store.get_execution("e1") is None
    running = {"execution_id": "e1", "workflow_id": "wf-x", "status": "running", "result": None}
    await store.put_execution(running)
    assert await store.get_execution("e1") == running
    done = {**running, "status": "succeeded", "result": {"nested": [1, "two", None]}}
    await store.put_execution(done)
    assert await store.get_execution("e1") == done
    assert await store.get_execution("e2") is None
