"""Two server instances on one PostgreSQL database: every subscriber, on either instance,
receives every write made through either, in id order, none lost, no duplicates."""

from __future__ import annotations

import asyncio

import httpx

from agentfield_asgi import MemoryClient
from agentfield_asgi.testing import ServerProcess, ThrowawayPostgres

from .streams import WAIT, SSEReader, wait_until, write

SSE = "/api/v1/memory/events/sse"
WRITERS_PER_INSTANCE = 4
WRITES_PER_WRITER = 50


async def test_subscribers_on_each_instance_see_all_writes_in_order(
    pg_cluster: ThrowawayPostgres, http: httpx.AsyncClient
) -> None:
    url = pg_cluster.create_database()
    a = ServerProcess(["--database-url", url]).start()
    b = ServerProcess(["--database-url", url]).start()
    try:
        sdk_seen: list = []
        memory = MemoryClient(a.url)
        memory.on_change()(sdk_seen.append)
        async with (
            SSEReader(http, a.url + SSE) as on_a,
            SSEReader(http, b.url + SSE) as on_b,
            SSEReader(http, a.url + SSE, params={"patterns": "b*"}) as b_writes_on_a,
            memory.events,
        ):
            for reader in (on_a, on_b, b_writes_on_a):
                assert (await reader.frame()).comments == ["connected"]
            await memory.events.wait_connected(WAIT)

            async def writer(server: ServerProcess, name: str) -> None:
                for i in range(WRITES_PER_WRITER):
                    await write(http, server.url, f"{name}_{i}", i)

            total = 2 * WRITERS_PER_INSTANCE * WRITES_PER_WRITER
            reading = [
                asyncio.create_task(on_a.events(total)),
                asyncio.create_task(on_b.events(total)),
                asyncio.create_task(b_writes_on_a.events(total // 2)),
            ]
            await asyncio.gather(
                *(writer(a, f"a{w}") for w in range(WRITERS_PER_INSTANCE)),
                *(writer(b, f"b{w}") for w in range(WRITERS_PER_INSTANCE)),
            )
            seen_a, seen_b, only_b = await asyncio.gather(*reading)
            await wait_until(lambda: len(sdk_seen) >= total, "the SDK subscriber on A")
    finally:
        a.stop()
        b.stop()

    expected_keys = {
        f"{side}{w}_{i}"
        for side in "ab"
        for w in range(WRITERS_PER_INSTANCE)
        for i in range(WRITES_PER_WRITER)
    }
    ids = [int(e["id"]) for e in seen_a]
    assert ids == sorted(set(ids)), "ids in order, no duplicates"
    assert {e["key"] for e in seen_a} == expected_keys, "none lost"
    # Both instances deliver the very same sequence.
    assert [e["id"] for e in seen_b] == [e["id"] for e in seen_a]
    assert [e.id for e in sdk_seen] == [e["id"] for e in seen_a]
    assert [e["id"] for e in only_b] == [e["id"] for e in seen_a if e["key"].startswith("b")]
    # Each writer's own writes arrive in the order it made them.
    for side in "ab":
        for w in range(WRITERS_PER_INSTANCE):
            mine = [e["data"] for e in seen_a if e["key"].startswith(f"{side}{w}_")]
            assert mine == list(range(WRITES_PER_WRITER))
