"""``GET /api/v1/memory/events/history``: every filter, paging, bounds, bad values (both
backends in process, plus one live server)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import httpx
import pytest

from agentfield_asgi.codec import parse_ts

HISTORY = "/api/v1/memory/events/history"


async def put(client: httpx.AsyncClient, key: str, data: object = 1, **headers: str) -> None:
    scope = {"X-Session-ID": "session", "X-Actor-ID": "actor"}
    body: dict[str, object] = {"key": key, "data": data}
    for header in headers:
        body["scope"] = scope[header]
    response = await client.post("/api/v1/memory/set", json=body, headers=headers)
    assert response.status_code == 200, response.text


async def history(client: httpx.AsyncClient, **params: object) -> list[dict]:
    response = await client.get(HISTORY, params={k: str(v) for k, v in params.items()})
    assert response.status_code == 200, response.text
    return response.json()


def keys(events: list[dict]) -> list[str]:
    return [e["key"] for e in events]


@pytest.fixture
async def filled(client: httpx.AsyncClient) -> list[dict]:
    """Ten events in three scopes; returns them (oldest first)."""
    await put(client, "customer_1")
    await put(client, "order_1")
    await put(client, "customer_2", **{"X-Session-ID": "s1"})
    await put(client, "order_2", **{"X-Session-ID": "s2"})
    await put(client, "customer_3", **{"X-Actor-ID": "a1"})
    await put(client, "order_x")
    await put(client, "customer_1", 2)
    response = await client.post("/api/v1/memory/delete", json={"key": "order_1"})
    assert response.status_code == 204
    await put(client, "customer_4", **{"X-Session-ID": "s1"})
    await put(client, "note")
    events = await history(client)
    assert len(events) == 10
    return events


async def test_oldest_first_with_default_limit(client: httpx.AsyncClient) -> None:
    for i in range(120):
        await put(client, f"k{i}", i)
    events = await history(client)
    assert len(events) == 100  # the default limit: the newest 100, oldest first
    assert keys(events) == [f"k{i}" for i in range(20, 120)]
    ids = [int(e["id"]) for e in events]
    assert ids == sorted(ids)


async def test_limit_returns_the_newest(client: httpx.AsyncClient, filled: list[dict]) -> None:
    assert await history(client, limit=3) == filled[-3:]
    assert await history(client, limit=1000) == filled


async def test_patterns_scope_and_scope_id(client: httpx.AsyncClient, filled: list[dict]) -> None:
    assert keys(await history(client, patterns="customer_*")) == [
        "customer_1",
        "customer_2",
        "customer_3",
        "customer_1",
        "customer_4",
    ]
    assert keys(await history(client, patterns="order_?,note")) == [
        "order_1",
        "order_2",
        "order_x",
        "order_1",
        "note",
    ]
    assert keys(await history(client, patterns="order_[0-9]")) == ["order_1", "order_2", "order_1"]
    assert keys(await history(client, scope="session")) == ["customer_2", "order_2", "customer_4"]
    assert keys(await history(client, scope="session", scope_id="s1")) == [
        "customer_2",
        "customer_4",
    ]
    assert keys(await history(client, scope="session", scope_id="s1", patterns="*_4")) == [
        "customer_4"
    ]
    assert keys(await history(client, scope="actor")) == ["customer_3"]
    assert await history(client, scope="workflow") == []
    deleted = await history(client, patterns="order_1", limit=1)
    assert deleted[0]["action"] == "delete" and deleted[0]["previous_data"] == 1


async def test_since_narrows_in_every_timestamp_form(
    client: httpx.AsyncClient, filled: list[dict]
) -> None:
    cut = filled[6]["timestamp"]
    expected = filled[6:]
    moment = datetime.fromtimestamp(parse_ts(cut) / 1e6, UTC)
    plus_two = moment.astimezone(timezone(timedelta(hours=2)))
    forms = [
        cut,  # ...Z
        moment.isoformat(),  # +00:00
        plus_two.isoformat(),  # another offset, same instant
        moment.replace(tzinfo=None).isoformat(),  # naive means UTC
    ]
    for form in forms:
        assert await history(client, since=form) == expected, form
    # A '+' sent unencoded in a URL arrives as a space.
    raw = await client.get(HISTORY + "?since=" + plus_two.isoformat())
    assert raw.status_code == 200 and raw.json() == expected
    # since only narrows the newest `limit`.
    assert await history(client, since=cut, limit=2) == filled[-2:]


async def test_since_id_pages_forward(client: httpx.AsyncClient, filled: list[dict]) -> None:
    pages, after = [], 0
    while True:
        page = await history(client, since_id=after, limit=3)
        if not page:
            break
        pages.append(page)
        after = page[-1]["id"]
    assert [len(p) for p in pages] == [3, 3, 3, 1]
    assert [e for p in pages for e in p] == filled
    assert keys(
        await history(client, since_id=filled[1]["id"], patterns="customer_*", limit=2)
    ) == [
        "customer_2",
        "customer_3",
    ]
    cut = filled[6]["timestamp"]
    assert await history(client, since_id=filled[0]["id"], since=cut) == filled[6:]


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"since": "yesterday"}, "invalid_parameter"),
        ({"since": "2026-13-01T00:00:00Z"}, "invalid_parameter"),
        ({"limit": "0"}, "invalid_parameter"),
        ({"limit": "1001"}, "invalid_parameter"),
        ({"limit": "ten"}, "invalid_parameter"),
        ({"since_id": "-1"}, "invalid_parameter"),
        ({"since_id": "abc"}, "invalid_parameter"),
        ({"scope": "planet"}, "invalid_scope"),
        ({"patterns": "order_[12"}, "invalid_pattern"),
    ],
)
async def test_bad_values_are_400_and_change_nothing(
    client: httpx.AsyncClient, filled: list[dict], params: dict, code: str
) -> None:
    response = await client.get(HISTORY, params=params)
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == code and body["error"] and isinstance(body["details"], dict)
    assert await history(client) == filled


def test_history_on_a_live_server(live_server) -> None:
    base = live_server.url
    for i in range(5):
        assert (
            httpx.post(base + "/api/v1/memory/set", json={"key": f"k{i}", "data": i}).status_code
            == 200
        )
    response = httpx.get(base + HISTORY, params={"patterns": "k[13]", "limit": 10})
    assert response.status_code == 200
    assert [e["key"] for e in response.json()] == ["k1", "k3"]
    assert httpx.get(base + HISTORY, params={"limit": "-5"}).status_code == 400
