"""The SDK's ``on_change`` subscriptions and ``events.history``: over HTTP against real
servers (restarts included) and in process, on both backends."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpx
import pytest

from agentfield_asgi import Agent, MemoryAccessError, MemoryClient
from agentfield_asgi.client import MemoryChangeEvent, StreamReset
from agentfield_asgi.server.app import create_memory_app

from .streams import WAIT, newest_id, wait_until, write


class Recorder:
    """A handler that records what it sees (sync or async flavour)."""

    def __init__(self) -> None:
        self.events: list[MemoryChangeEvent] = []

    def __call__(self, event: MemoryChangeEvent) -> None:
        self.events.append(event)

    @property
    def keys(self) -> list[str]:
        return [e.key for e in self.events]

    async def wait_for(self, count: int) -> None:
        await wait_until(lambda: len(self.events) >= count, f"{count} events")

    def assert_once_in_order(self) -> None:
        ids = [e.seq for e in self.events]
        assert ids == sorted(set(ids)), ids


async def test_on_change_over_http(make_server, caplog: pytest.LogCaptureFixture) -> None:
    server = make_server()
    memory = MemoryClient(server.url)
    customers, several, temp, everything = Recorder(), Recorder(), Recorder(), Recorder()
    seen_by_failing: list[str] = []

    @memory.on_change("customer_*")
    async def on_customer(event: MemoryChangeEvent) -> None:
        await asyncio.sleep(0)
        customers(event)

    memory.on_change(["order_?", "note"])(several)  # a list of patterns, a sync handler
    memory.session("u1").on_change("temp_*")(temp)  # only session u1
    memory.on_change()(everything)

    @memory.on_change("customer_*")
    def failing(event: MemoryChangeEvent) -> None:
        seen_by_failing.append(event.key)
        raise RuntimeError("handler bug")

    async with memory.events:
        await memory.events.wait_connected(WAIT)
        await memory.set("customer_1", {"tier": "gold"})
        await memory.set("order_1", 1)
        await memory.set("order_12", 2)
        await memory.session("u1").set("temp_cart", [1])
        await memory.session("u2").set("temp_cart", [2])
        await memory.actor("u1").set("temp_other", 3)
        await memory.set("note", "n")
        await memory.set("customer_1", {"tier": "silver"})
        await memory.delete("customer_1")
        await everything.wait_for(9)
        await customers.wait_for(3)
        await wait_until(lambda: len(seen_by_failing) == 3, "the failing handler's events")
    assert customers.keys == ["customer_1"] * 3
    first, second, deleted = customers.events
    assert (first.type, first.scope, first.scope_id, first.action) == (
        "memory_change",
        "global",
        "global",
        "set",
    )
    assert first.data == {"tier": "gold"} and first.previous_data is None
    assert second.previous_data == {"tier": "gold"} and second.data == {"tier": "silver"}
    assert deleted.action == "delete" and deleted.previous_data == {"tier": "silver"}
    assert first.timestamp.endswith("Z") and isinstance(first.metadata, dict)
    assert first.id == str(first.seq)
    assert several.keys == ["order_1", "note"]
    assert [(e.scope, e.scope_id, e.data) for e in temp.events] == [("session", "u1", [1])]
    assert len(everything.events) == 9
    for recorder in (customers, several, temp, everything):
        recorder.assert_once_in_order()
    # The failing handler saw every event: its errors were logged, the stream went on.
    assert seen_by_failing == ["customer_1"] * 3
    assert "on_change handler" in caplog.text and "handler bug" in caplog.text


async def test_exactly_once_across_server_restarts(make_server, http: httpx.AsyncClient) -> None:
    server = make_server()
    port = server.port
    memory = MemoryClient(server.url)
    seen = Recorder()
    memory.on_change("k*")(seen)
    async with memory.events:
        await memory.events.wait_connected(WAIT)
        for i in range(20):
            await write(http, server.url, f"k{i}", i)
        await seen.wait_for(20)
        server.stop()
        # While the subscriber is away, another instance takes writes on the same database.
        elsewhere = make_server()
        for i in range(20, 50):
            await write(http, elsewhere.url, f"k{i}", i)
            await write(http, elsewhere.url, f"other{i}", i)
        elsewhere.stop()
        restarted = make_server(port=port)  # the subscriber's server is back
        for i in range(50, 60):
            await write(http, restarted.url, f"k{i}", i)
        await seen.wait_for(60)
        await asyncio.sleep(0.5)  # nothing more arrives (no duplicates)
    assert seen.keys == [f"k{i}" for i in range(60)]
    assert [e.data for e in seen.events] == list(range(60))
    seen.assert_once_in_order()


async def test_reset_is_reported_and_delivery_goes_on(make_server, http: httpx.AsyncClient) -> None:
    server = make_server(event_retention_count=5, compaction_interval_seconds=0.1)
    for i in range(20):
        await write(http, server.url, f"k{i}", i)
    last = await newest_id(http, server.url)

    async def compacted() -> bool:
        history = (await http.get(server.url + "/api/v1/memory/events/history")).json()
        return len(history) == 5

    await wait_until(compacted, "retention")
    memory = MemoryClient(server.url)
    seen, resets = Recorder(), []
    sub = memory.events.subscribe("k*", seen, last_event_id=1, on_reset=resets.append)
    async with memory.events:
        await seen.wait_for(5)
    assert resets == [StreamReset("compacted", str(last - 5))]
    assert seen.keys == [f"k{i}" for i in range(15, 20)]
    assert sub.last_event_id == str(last)


async def test_history_through_the_client(make_server) -> None:
    server = make_server()
    memory = MemoryClient(server.url)
    for i in range(6):
        await memory.set(f"k{i}", i)
    await memory.session("s1").set("k_s1", "a")
    await memory.session("s2").set("k_s2", "b")
    everything = await memory.events.history()
    assert [e.key for e in everything] == [f"k{i}" for i in range(6)] + ["k_s1", "k_s2"]
    assert [e.key for e in await memory.events.history("k[0-2]")] == ["k0", "k1", "k2"]
    assert [e.key for e in await memory.events.history(["k1", "k_s?"], limit=2)] == ["k_s1", "k_s2"]
    assert [e.key for e in await memory.session("s1").events.history()] == ["k_s1"]
    assert [e.key for e in await memory.events.history(scope="session")] == ["k_s1", "k_s2"]
    page = await memory.events.history(since_id=everything[2].id, limit=2)
    assert [e.key for e in page] == ["k3", "k4"]
    cut = datetime.fromisoformat(everything[5].timestamp.replace("Z", "+00:00"))
    naive = cut.astimezone(UTC).replace(tzinfo=None)
    assert [e.key for e in await memory.events.history(since=naive)] == ["k5", "k_s1", "k_s2"]
    with pytest.raises(MemoryAccessError) as info:
        await memory.events.history(limit=0)
    assert info.value.status == 400


async def test_bad_patterns_fail_at_the_decorator(service) -> None:
    memory = MemoryClient(service=service)
    with pytest.raises(ValueError):
        memory.on_change("order_[abc")
    with pytest.raises(ValueError):
        memory.session().on_change("x")  # no session id: which session?


async def test_in_process_subscriptions_resume_after_a_slow_handler(database_url: str) -> None:
    service = create_memory_app(database_url, subscriber_queue_size=4)
    await service.start()
    try:
        memory = MemoryClient(service=service)
        seen = Recorder()

        @memory.on_change("k*")
        async def slow(event: MemoryChangeEvent) -> None:
            if not seen.events:
                await asyncio.sleep(0.5)  # meanwhile its queue (4) overflows
            seen(event)

        async with memory.events:
            await memory.events.wait_connected(WAIT)
            for i in range(50):
                await memory.set(f"k{i}", i)
            await seen.wait_for(50)
            await asyncio.sleep(0.3)
        assert seen.keys == [f"k{i}" for i in range(50)]
        seen.assert_once_in_order()
        assert service.hub.subscriber_count == 0
    finally:
        await service.stop()


async def test_agent_lifespan_runs_subscriptions(database_url: str) -> None:
    agent = Agent("watcher", serve_control_plane=True, database_url=database_url)
    seen = Recorder()
    agent.memory.on_change("customer_*")(seen)
    async with agent.lifespan():
        await agent.memory.events.wait_connected(WAIT)
        await agent.memory.set("customer_1", 1)
        await agent.memory.set("unrelated", 2)
        await agent.memory.set("customer_2", 3)
        await seen.wait_for(2)
        assert agent.service is not None and agent.service.hub.subscriber_count == 1
    assert seen.keys == ["customer_1", "customer_2"]
    assert seen.events[0].metadata.get("agent_id") == "watcher"
    assert not any(s.running for s in agent.memory.events.subscriptions)


async def test_agent_against_a_remote_control_plane(make_server, http: httpx.AsyncClient) -> None:
    server = make_server()
    agent = Agent("remote-watcher", control_plane_url=server.url, public_url="http://127.0.0.1:9")
    seen = Recorder()
    agent.memory.session("s9").on_change("temp_*")(seen)
    async with agent.lifespan():
        await agent.memory.events.wait_connected(WAIT)
        await write(http, server.url, "temp_a", 1, scope="session", headers={"X-Session-ID": "s8"})
        await write(http, server.url, "temp_b", 2, scope="session", headers={"X-Session-ID": "s9"})
        await seen.wait_for(1)
        await asyncio.sleep(0.3)
        health = (await http.get(server.url + "/api/v1/health")).json()
        assert health["subscribers"] == 1
    assert [(e.key, e.scope_id) for e in seen.events] == [("temp_b", "s9")]

    async def released() -> bool:
        return (await http.get(server.url + "/api/v1/health")).json()["subscribers"] == 0

    await wait_until(released, "the agent's stream to be released")
