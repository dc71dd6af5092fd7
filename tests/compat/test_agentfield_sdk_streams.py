"""The SDK's event client (WebSocket ``on_change``, ``history``) and API key, live."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from agentfield_asgi.testing import ServerProcess

from .sdk import NODE, RUN, SDK, MemoryAccessError, connect, disconnect

try:
    from agentfield.types import MemoryChangeEvent
except ImportError as exc:  # pragma: no cover - environment problem
    pytest.fail(f"the AgentField SDK is needed: pip install -e '.[test]' ({exc})", pytrace=False)

WAIT = 30.0


async def until(condition: Callable[[], bool], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def subscribers(server: ServerProcess) -> int:
    async with httpx.AsyncClient(base_url=server.url) as http:
        return int((await http.get("/api/v1/health")).json()["subscribers"])


async def wait_subscribed(sdk: SDK) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT
    while not (sdk.app_memory.events._is_connected() and await subscribers(sdk.server) >= 1):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("the SDK's WebSocket did not connect")
        await asyncio.sleep(0.05)


async def test_on_change_receives_sets_and_deletes_over_websocket(sdk: SDK) -> None:
    seen: list[MemoryChangeEvent] = []

    @sdk.app_memory.on_change("order_*")
    async def on_order(event: MemoryChangeEvent) -> None:
        seen.append(event)

    await wait_subscribed(sdk)
    await sdk.app_memory.set("order_1", {"qty": 1})
    await sdk.app_memory.set("invoice_1", {"total": 5})  # no match: never delivered
    await sdk.app_memory.delete("order_1")
    await until(lambda: len(seen) >= 2, "two order events")
    await asyncio.sleep(0.2)  # anything else would have arrived by now
    events = sorted(seen, key=lambda e: int(e.id or 0))
    assert [(e.key, e.action) for e in events] == [("order_1", "set"), ("order_1", "delete")]
    assert events[0].data == {"qty": 1} and events[1].previous_data == {"qty": 1}
    assert (events[0].scope, events[0].scope_id) == ("workflow", RUN)
    assert events[0].metadata["agent_id"] == NODE
    assert int(events[0].id or 0) < int(events[1].id or 0)


async def test_scoped_on_change_sees_only_its_scope_id(sdk: SDK) -> None:
    seen: list[MemoryChangeEvent] = []

    @sdk.app_memory.session("user_1").on_change("cart_*")
    async def on_cart(event: MemoryChangeEvent) -> None:
        seen.append(event)

    await wait_subscribed(sdk)
    await sdk.app_memory.session("user_2").set("cart_items", [9])
    await sdk.app_memory.session("user_1").set("cart_items", [1])
    await until(lambda: len(seen) >= 1, "the user_1 event")
    await asyncio.sleep(0.2)
    assert [(e.scope_id, e.data) for e in seen] == [("user_1", [1])]


async def test_history_filters_by_pattern_scope_and_since(sdk: SDK) -> None:
    start = datetime.now(UTC) - timedelta(seconds=5)
    await sdk.app_memory.set("step_1", "a")
    await sdk.app_memory.set("note", "b")
    await sdk.app_memory.session("user_9").set("step_2", "c")
    everything = await sdk.app_memory.events.history(limit=10)
    assert [e.key for e in everything] == ["step_1", "note", "step_2"]  # oldest first
    steps = await sdk.app_memory.events.history(patterns="step_*", since=start, limit=10)
    assert [e.key for e in steps] == ["step_1", "step_2"]
    in_session = await sdk.app_memory.events.history(scope="session", scope_id="user_9")
    assert [(e.key, e.data) for e in in_session] == [("step_2", "c")]
    assert await sdk.app_memory.events.history(since=datetime.now(UTC) + timedelta(hours=1)) == []


def test_api_key_is_sent_and_required(database_url: str) -> None:
    key = "compat-key"
    server = ServerProcess(["--database-url", database_url, "--api-key", key]).start()

    async def scenario() -> None:
        keyed = connect(server, api_key=key)
        refused = connect(server)
        try:
            await keyed.app_memory.set("k", {"v": 1})
            assert await keyed.app_memory.get("k") == {"v": 1}
            events = await keyed.app_memory.events.history(limit=5)
            assert [e.key for e in events] == ["k"]
            with pytest.raises(MemoryAccessError):
                await refused.app_memory.get("k")
            assert (
                await refused.app_memory.exists("k") is False
            )  # the SDK reads a refusal as "absent"
        finally:
            await disconnect(keyed)
            await disconnect(refused)

    try:
        asyncio.run(scenario())
    finally:
        server.stop()
