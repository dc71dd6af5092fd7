"""Execution records by id (the control plane's durable executions), on both backends."""

from __future__ import annotations

import asyncio

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


async def test_finish_execution_keeps_the_first_outcome(store: Store) -> None:
    running = {"execution_id": "e1", "workflow_id": "wf-x", "status": "running"}
    await store.put_execution(running)
    failed = {**running, "status": "failed", "error": "deadline"}
    assert await store.finish_execution(failed) is True
    late = {**running, "status": "succeeded", "result": 1}
    assert await store.finish_execution(late) is False
    assert await store.get_execution("e1") == failed
    assert await store.finish_execution({**running, "execution_id": "missing"}) is False


async def test_concurrent_finishers_one_wins(store: Store) -> None:
    await store.put_execution({"execution_id": "e2", "workflow_id": "wf-y", "status": "running"})
    outcomes = [
        {"execution_id": "e2", "workflow_id": "wf-y", "status": s, "n": i}
        for i, s in enumerate(["succeeded", "failed", "timeout", "succeeded", "failed"])
    ]
    stored = await asyncio.gather(*(store.finish_execution(o) for o in outcomes))
    assert sum(stored) == 1
    assert await store.get_execution("e2") == outcomes[stored.index(True)]
