"""Crash safety: SIGKILL the server during concurrent writes, restart it on the same database,
and check that every acknowledged write is there with its value, that nothing half-written
appears (a batch is all there or not at all; a write in flight at the kill is either fully
there or absent), and that the event log agrees with the records."""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from agentfield_asgi.settings import Settings
from agentfield_asgi.store import open_store
from agentfield_asgi.store.base import Event, Record
from agentfield_asgi.testing import ServerProcess, sqlite_writer_pids

from .helpers import every_event

API = "/api/v1/memory"
WORKERS = 16
ACKS_BEFORE_KILL = 400
PAD = "p" * 200


@dataclass
class Worker:
    """What one client sent and which of it was acknowledged."""

    n: int
    acked_sets: dict[str, Any] = field(default_factory=dict)  # unique key -> value
    acked_batches: list[int] = field(default_factory=list)
    batches_sent: list[int] = field(default_factory=list)
    last_acked: int | None = None  # value of the overwritten key "w:last"
    last_in_flight: int | None = None
    incr_acked: int = 0
    incr_in_flight: bool = False
    in_flight_set: tuple[str, Any] | None = None


def unique_value(w: int, i: int) -> dict[str, Any]:
    return {"w": w, "i": i, "pad": PAD, "quote": 'it\'s "fine"'}


async def run_worker(
    url: str, worker: Worker, acks: list[int], enough: asyncio.Event, stop_after: int | None = None
) -> None:
    """Write until the server is gone, a write gets 503 (its outcome unknown: it stays in
    flight), or ``stop_after`` writes in all were acknowledged."""
    w = worker.n
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:

        async def post(path: str, body: dict[str, Any]) -> httpx.Response | None:
            r = await client.post(f"{API}/{path}", json=body)
            if r.status_code == 503:
                return None
            assert r.status_code == 200, r.text
            return r

        i = 0
        try:
            while stop_after is None or acks[0] < stop_after:
                i += 1
                kind = i % 4
                if kind == 0:
                    key, value = f"w{w}:k{i}", unique_value(w, i)
                    worker.in_flight_set = (key, value)
                    if await post("set", {"key": key, "data": value}) is None:
                        return
                    worker.acked_sets[key] = value
                    worker.in_flight_set = None
                elif kind == 1:
                    worker.last_in_flight = i
                    if await post("set", {"key": f"w{w}:last", "data": i}) is None:
                        return
                    worker.last_acked, worker.last_in_flight = i, None
                elif kind == 2:
                    worker.batches_sent.append(i)
                    ops = [
                        {"op": "set", "key": f"w{w}:b{i}:{j}", "data": [w, i, j]} for j in range(3)
                    ]
                    ops.append({"op": "incr", "key": f"w{w}:batches"})
                    if await post("batch", {"ops": ops}) is None:
                        return
                    worker.acked_batches.append(i)
                else:
                    worker.incr_in_flight = True
                    r = await post("incr", {"key": f"w{w}:n"})
                    if r is None:
                        return
                    worker.incr_acked += 1
                    worker.incr_in_flight = False
                    assert r.json()["data"] == worker.incr_acked
                acks[0] += 1
                if acks[0] >= ACKS_BEFORE_KILL:
                    enough.set()
        except httpx.TransportError:
            return  # the server is gone


async def read_back(url: str) -> tuple[dict[str, Record], list[Event]]:
    store = open_store(Settings(database_url=url))
    await store.open()
    try:
        records = {r.key: r for r in await store.list("global", "global")}
        return records, await every_event(store)
    finally:
        await store.close()


def check(workers: list[Worker], records: dict[str, Record], events: list[Event]) -> None:
    expected_keys: set[str] = set()
    for wk in workers:
        w = wk.n
        # 1. every acknowledged unique write is there with its value
        for key, value in wk.acked_sets.items():
            assert key in records, f"acknowledged write {key} lost"
            assert records[key].data == value
        expected_keys |= set(wk.acked_sets)
        if wk.in_flight_set is not None and wk.in_flight_set[0] in records:
            assert records[wk.in_flight_set[0]].data == wk.in_flight_set[1]
            expected_keys.add(wk.in_flight_set[0])
        # 2. the overwritten key holds the last acknowledged value, or the one in flight
        if wk.last_acked is not None or wk.last_in_flight is not None:
            allowed = {wk.last_acked, wk.last_in_flight} - {None}
            assert records[f"w{w}:last"].data in allowed
            expected_keys.add(f"w{w}:last")
        # 3. batches: acknowledged ones complete; any batch all or nothing
        present_batches = 0
        for i in wk.batches_sent:
            parts = [records.get(f"w{w}:b{i}:{j}") for j in range(3)]
            there = [p is not None for p in parts]
            assert all(there) or not any(there), f"batch {w}/{i} half-written"
            if all(there):
                present_batches += 1
                assert [p.data for p in parts if p] == [[w, i, j] for j in range(3)]
                expected_keys |= {f"w{w}:b{i}:{j}" for j in range(3)}
            else:
                assert i not in wk.acked_batches, f"acknowledged batch {w}/{i} lost"
        if present_batches:
            assert records[f"w{w}:batches"].data == present_batches
            expected_keys.add(f"w{w}:batches")
        # 4. the counter counts every acknowledged increment (and maybe the one in flight)
        if wk.incr_acked or wk.incr_in_flight:
            allowed_counts = {wk.incr_acked, wk.incr_acked + int(wk.incr_in_flight)}
            if f"w{w}:n" in records:
                assert records[f"w{w}:n"].data in allowed_counts
                expected_keys.add(f"w{w}:n")
            else:
                assert wk.incr_acked == 0
    # 5. nothing else appeared
    assert set(records) == expected_keys
    # 6. the event log agrees with the records: the newest event of each key is a set of
    # exactly the stored value, every version has its event, and no event lacks its write.
    by_key: dict[str, list[Event]] = {}
    for event in events:
        assert event.action == "set"
        by_key.setdefault(event.key, []).append(event)
    assert set(by_key) == set(records)
    for key, record in records.items():
        assert by_key[key][-1].data == record.data, key
        assert len(by_key[key]) == record.version, key
    ids = [e.id for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def start_workers(
    url: str, workers: list[Worker], acks: list[int], enough: asyncio.Event, **kw: Any
) -> list[asyncio.Task[None]]:
    return [asyncio.create_task(run_worker(url, wk, acks, enough, **kw)) for wk in workers]


async def write_one_more(url: str, key: str) -> None:
    """A set and a delete of ``key``: the server takes writes."""
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        r = await client.post(f"{API}/set", json={"key": key, "data": 1})
        assert r.status_code == 200
        await client.post(f"{API}/delete", json={"key": key})


async def check_database(url: str, workers: list[Worker], *, besides: str) -> None:
    """:func:`check` on the database, leaving out the events of the key ``besides``."""
    records, events = await read_back(url)
    check(workers, records, [e for e in events if e.key != besides])


async def test_sigkill_during_concurrent_writes(database_url: str) -> None:
    server = ServerProcess(["--database-url", database_url]).start()
    workers = [Worker(n) for n in range(WORKERS)]
    acks = [0]
    enough = asyncio.Event()
    tasks = start_workers(server.url, workers, acks, enough)
    try:
        await asyncio.wait_for(enough.wait(), timeout=300)
        await asyncio.to_thread(server.kill)
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=120)
    finally:
        server.stop()
        for task in tasks:
            task.cancel()
    assert acks[0] >= ACKS_BEFORE_KILL

    # The restarted server serves what was acknowledged.
    with ServerProcess(["--database-url", database_url]) as restarted:
        async with httpx.AsyncClient(base_url=restarted.url, timeout=60) as client:
            for wk in workers:
                for key, value in list(wk.acked_sets.items())[:3]:
                    r = await client.post(f"{API}/get", json={"key": key})
                    assert r.status_code == 200 and r.json()["data"] == value
        await write_one_more(restarted.url, "after-restart")
    await check_database(database_url, workers, besides="after-restart")


async def test_sigkill_of_the_sqlite_writer_process_during_concurrent_writes(
    tmp_path: Path,
) -> None:
    """The server stays up while its writer process is killed mid-load: writes in flight
    get 503 (made or not, all or nothing), a new writer takes over, and nothing
    acknowledged is lost; the event log still agrees with the records."""
    db = str(tmp_path / "writer-killed.db")
    url = f"sqlite:///{db}"
    workers = [Worker(n) for n in range(WORKERS)]
    acks = [0]
    enough = asyncio.Event()
    with ServerProcess(["--database-url", url]) as server:
        tasks = start_workers(server.url, workers, acks, enough, stop_after=3 * ACKS_BEFORE_KILL)
        try:
            await asyncio.wait_for(enough.wait(), timeout=300)
            (writer,) = sqlite_writer_pids(db)
            os.kill(writer, signal.SIGKILL)
            await asyncio.wait_for(asyncio.gather(*tasks), timeout=300)
            # Fresh clients write through the new writer.
            acks[0] = 0
            fresh = [Worker(WORKERS + n) for n in range(WORKERS)]
            workers += fresh
            tasks = start_workers(server.url, fresh, acks, enough, stop_after=ACKS_BEFORE_KILL)
            await asyncio.wait_for(asyncio.gather(*tasks), timeout=300)
        finally:
            for task in tasks:
                task.cancel()
        assert acks[0] >= ACKS_BEFORE_KILL
        assert sqlite_writer_pids(db) not in ([], [writer])
        await write_one_more(server.url, "after-kill")
    await check_database(url, workers, besides="after-kill")
