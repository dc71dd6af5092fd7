"""The SQLite writer's two paths: a group of sets/deletes decided in memory and written
in bulk, and the unit-by-unit path it falls back to (and that clears take)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentfield_asgi.store.base import ClearOp, DeleteOp
from agentfield_asgi.store.sqlite import SQLiteStore
from agentfield_asgi.store.sqlite import writer as sqlite_writer

from .conftest import G, put


async def test_rejected_bulk_write_is_redone_unit_by_unit(
    thread_store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bulk path writes the group's rows, then fails inside the transaction: the group
    must be rolled back and redone one by one."""
    sqlite_store = thread_store
    rejected: list[bool] = []
    write_plan = sqlite_writer._write_plan

    def write_then_fail(conn: Any, plan: Any) -> Any:
        events = write_plan(conn, plan)
        if not rejected and len(plan.events) > 1:  # the group's bulk write, the first time
            rejected.append(True)
            raise RuntimeError("bulk write refused")
        return events

    monkeypatch.setattr(sqlite_writer, "_write_plan", write_then_fail)
    seen: list[Any] = []
    sqlite_store.watch(seen.extend)
    results = await asyncio.gather(*(sqlite_store.set(put(f"k{i}", i)) for i in range(12)))
    assert rejected, "the bulk path was not taken"
    assert [r.key for r in results] == [f"k{i}" for i in range(12)]
    assert {r.version for r in results} == {1}  # the refused group's rows were rolled back
    records = await sqlite_store.get_many([f"k{i}" for i in range(12)], [G])
    assert {k: r.data for k, r in records.items()} == {f"k{i}": i for i in range(12)}
    await asyncio.sleep(0)
    assert sorted(e.key for e in seen) == sorted(f"k{i}" for i in range(12))
    ids = [e.id for e in seen]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


async def test_event_ids_continue_across_both_paths(sqlite_store: SQLiteStore) -> None:
    """Bulk groups number their events themselves; clears insert with AUTOINCREMENT. Mixed,
    the log stays strictly increasing with no id reused, and survives a reopen."""
    await sqlite_store.set(put("a", 1))
    await sqlite_store.write([ClearOp(*G)])
    await asyncio.gather(*(sqlite_store.set(put(f"b{i}", i)) for i in range(5)))
    await sqlite_store.delete(DeleteOp(*G, "b0"))
    await sqlite_store.write([ClearOp(*G)])
    await sqlite_store.set(put("c", 3))
    events = await sqlite_store.events_after(0, 100)
    ids = [e.id for e in events]
    assert ids == list(range(1, len(ids) + 1))
    assert [e.action for e in events].count("delete") == 1 + 1 + 4
    path = sqlite_store.path
    await sqlite_store.close()
    reopened = SQLiteStore(path)
    await reopened.open()
    try:
        await reopened.set(put("d", 4))
        after = await reopened.events_after(ids[-1], 10)
        assert [(e.id, e.key) for e in after] == [(ids[-1] + 1, "d")]
    finally:
        await reopened.close()
    await sqlite_store.open()  # the fixture closes it again
