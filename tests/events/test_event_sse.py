"""``GET /api/v1/memory/events/sse`` against real servers on loopback, both backends."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from .streams import SSEReader, delete, newest_id, subscribers, wait_subscribers, wait_until, write

SSE = "/api/v1/memory/events/sse"


async def test_wire_format_and_registration(make_server, http: httpx.AsyncClient) -> None:
    server = make_server()
    base = server.url
    async with SSEReader(http, base + SSE) as sse:
        assert sse.response.status_code == 200
        assert sse.response.headers["content-type"].startswith("text/event-stream")
        first = await sse.frame()
        assert first.comments == ["connected"] and first.event is None
        assert await subscribers(http, base) == 1
        await write(http, base, "ticket", {"priority": "high"})
        await delete(http, base, "ticket")
        created, deleted = await sse.events(2)
    await wait_subscribers(http, base, 0)
    assert int(created["id"]) < int(deleted["id"])
    assert created["type"] == "memory_change"
    assert (created["scope"], created["scope_id"], created["key"], created["action"]) == (
        "global",
        "global",
        "ticket",
        "set",
    )
    assert created["data"] == {"priority": "high"} and created["previous_data"] is None
    assert created["timestamp"].endswith("Z")
    assert set(created["metadata"]) >= {"agent_id", "actor_id", "workflow_id"}
    assert deleted["action"] == "delete" and deleted["data"] is None
    assert deleted["previous_data"] == {"priority": "high"}


@pytest.mark.parametrize("how", ["header", "last_event_id", "since_id"])
async def test_resume_receives_exactly_the_missed_events_in_order(
    make_server, http: httpx.AsyncClient, how: str
) -> None:
    server = make_server()
    base = server.url
    await write(http, base, "before", 0)
    async with SSEReader(http, base + SSE) as sse:
        await sse.frame()
        await write(http, base, "seen", 1)
        (seen,) = await sse.events(1)
    await wait_subscribers(http, base, 0)
    written = [await write(http, base, f"missed_{i}", i) for i in range(100)]
    last = seen["id"]
    params = {} if how == "header" else {how: last}
    headers = {"Last-Event-ID": last} if how == "header" else {}
    async with SSEReader(http, base + SSE, params=params, headers=headers) as sse:
        replayed = await sse.events(100)
        await write(http, base, "live", "after")
        (live,) = await sse.events(1)
    assert [e["key"] for e in replayed] == [f"missed_{i}" for i in range(100)]
    assert [e["data"] for e in replayed] == [r["data"] for r in written]
    ids = [int(e["id"]) for e in replayed]
    assert ids == sorted(set(ids)) and ids[0] > int(last)
    assert live["key"] == "live" and int(live["id"]) > ids[-1]


async def test_reset_when_resume_point_is_older_than_retention(
    make_server, http: httpx.AsyncClient
) -> None:
    server = make_server(event_retention_count=10, compaction_interval_seconds=0.1)
    base = server.url
    for i in range(30):
        await write(http, base, f"k{i}", i)
    last = await newest_id(http, base)

    async def compacted() -> bool:
        history = (await http.get(base + "/api/v1/memory/events/history")).json()
        return int(history[0]["id"]) == last - 9

    await wait_until(compacted, "retention to drop old events")
    async with SSEReader(http, base + SSE, headers={"Last-Event-ID": "2"}) as sse:
        await sse.frame()  # connected
        reset = await sse.frame()
        after = await sse.events(10)
    assert reset.event == "reset"
    assert reset.json() == {"type": "reset", "reason": "compacted", "resume_from": str(last - 10)}
    assert reset.id == str(last - 10)  # a browser resumes after the gap next time
    assert [int(e["id"]) for e in after] == list(range(last - 9, last + 1))


async def test_filters(make_server, http: httpx.AsyncClient) -> None:
    server = make_server()
    base = server.url
    params = {"patterns": "customer_*,order_[0-9]", "scope": "session", "scope_id": "u1"}
    async with SSEReader(http, base + SSE, params=params) as sse:
        await sse.frame()
        u1, u2 = {"X-Session-ID": "u1"}, {"X-Session-ID": "u2"}
        await write(http, base, "customer_1", 1, scope="session", headers=u1)
        await write(http, base, "customer_2", 2, scope="session", headers=u2)
        await write(http, base, "customer_3", 3)  # global
        await write(http, base, "order_x", 4, scope="session", headers=u1)
        await write(http, base, "order_7", 5, scope="session", headers=u1)
        got = await sse.events(2)
    assert [(e["key"], e["scope_id"]) for e in got] == [("customer_1", "u1"), ("order_7", "u1")]


@pytest.mark.parametrize(
    ("params", "headers", "code"),
    [
        ({"patterns": "order_[abc"}, {}, "invalid_pattern"),
        ({"scope": "planet"}, {}, "invalid_scope"),
        ({}, {"Last-Event-ID": "abc"}, "invalid_parameter"),
        ({"last_event_id": "-1"}, {}, "invalid_parameter"),
        ({"since_id": "1.5"}, {}, "invalid_parameter"),
    ],
)
async def test_bad_input_is_a_400_before_streaming(
    make_server, http: httpx.AsyncClient, params: dict, headers: dict, code: str
) -> None:
    server = make_server()
    response = await http.get(server.url + SSE, params=params, headers=headers)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["code"] == code and body["error"] and isinstance(body["details"], dict)
    assert await subscribers(http, server.url) == 0


async def test_per_client_subscriber_limit(make_server, http: httpx.AsyncClient) -> None:
    server = make_server(max_subscribers_per_client=2)
    base = server.url
    async with SSEReader(http, base + SSE) as first, SSEReader(http, base + SSE) as second:
        await first.frame()
        await second.frame()
        refused = await http.get(base + SSE)
        assert refused.status_code == 429
        assert refused.json()["code"] == "too_many_subscriptions"
    await wait_subscribers(http, base, 0)
    async with SSEReader(http, base + SSE) as again:
        assert (await again.frame()).comments == ["connected"]


async def test_keep_alive_pings(make_server, http: httpx.AsyncClient) -> None:
    server = make_server(sse_ping_seconds=0.2)
    async with SSEReader(http, server.url + SSE) as sse:
        await sse.frame()
        ping = await sse.frame()
    assert ping.event is None and ping.comments and ping.comments[0].startswith("ping")


async def test_slow_consumer_is_cut_off_and_resumes_while_others_are_unaffected(
    make_server, http: httpx.AsyncClient
) -> None:
    server = make_server(subscriber_queue_size=8)
    base = server.url
    big = "x" * 128 * 1024  # enough data to fill loopback socket buffers
    count = 200
    async with httpx.AsyncClient(timeout=60.0) as slow_http:
        async with SSEReader(slow_http, base + SSE) as slow, SSEReader(http, base + SSE) as fast:
            await slow.frame()
            await fast.frame()
            fast_events: list[dict] = []

            async def read_fast() -> None:
                fast_events.extend(await fast.events(count))

            reader = asyncio.create_task(read_fast())
            for i in range(count):
                await write(http, base, f"big_{i}", [i, big])
            await reader
            # The slow one's registration is gone although its connection is still open.
            await wait_subscribers(http, base, 1)
            slow_frames = await slow.rest()
    assert [e["key"] for e in fast_events] == [f"big_{i}" for i in range(count)]
    slow_events = [f.json() for f in slow_frames if f.event == "message"]
    assert len(slow_events) < count
    assert [e["key"] for e in slow_events] == [f"big_{i}" for i in range(len(slow_events))]
    assert slow_frames[-1].comments and slow_frames[-1].comments[0].startswith("overflow")
    # It resumes from its last id and gets the rest, exactly.
    last = slow_events[-1]["id"] if slow_events else str(int(fast_events[0]["id"]) - 1)
    async with SSEReader(http, base + SSE, headers={"Last-Event-ID": last}) as resumed:
        rest = await resumed.events(count - len(slow_events))
    assert [e["key"] for e in slow_events + rest] == [f"big_{i}" for i in range(count)]
    await wait_subscribers(http, base, 0)


async def test_query_parameters_from_a_browser_event_source(
    make_server, http: httpx.AsyncClient
) -> None:
    """An EventSource cannot set headers: ``api_key`` rides in the query next to the filters,
    and an allowed origin gets CORS headers on the stream."""
    origin = "http://app.example"
    server = make_server(args=("--cors-origin", origin))
    params = {"patterns": "k*", "api_key": "ignored-without-keys"}
    async with SSEReader(http, server.url + SSE, params=params, headers={"Origin": origin}) as sse:
        assert sse.response.headers["access-control-allow-origin"] == origin
        await sse.frame()
        await write(http, server.url, "other", 0)
        await write(http, server.url, "k1", 1)
        (event,) = await sse.events(1)
    assert event["key"] == "k1"


async def test_api_key_in_the_query_and_per_key_limits(
    make_server, http: httpx.AsyncClient
) -> None:
    server = make_server(max_subscribers_per_client=1, args=("--api-key", "k1", "--api-key", "k2"))
    base = server.url
    assert (await http.get(base + SSE)).status_code == 401
    assert (await http.get(base + SSE, params={"api_key": "wrong"})).status_code == 401
    async with SSEReader(http, base + SSE, params={"api_key": "k1", "patterns": "a*"}) as first:
        assert (await first.frame()).comments == ["connected"]
        # The limit counts per key: k1 is at its limit, k2 (same address) is not.
        refused = await http.get(base + SSE, headers={"X-API-Key": "k1"})
        assert refused.status_code == 429
        async with SSEReader(http, base + SSE, headers={"Authorization": "Bearer k2"}) as second:
            assert (await second.frame()).comments == ["connected"]
            await write(http, base, "a1", 1, headers={"X-API-Key": "k2"})
            (event,) = await first.events(1)
            assert event["key"] == "a1"
