"""The ``/memory/query`` and ``/memory/keys`` extensions: answers, paging, ranking and bad
input (a 4xx with the error body, nothing changed). In process, on both backends."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

API = "/api/v1/memory"
SESSION = {"X-Session-ID": "s1"}


@pytest.fixture
async def filled(client: httpx.AsyncClient) -> None:
    ops = [
        {"op": "set", "key": f"p/{i}", "data": {"n": i, "tag": "even" if i % 2 == 0 else "odd"}}
        for i in range(8)
    ]
    ops.append({"op": "set", "key": "q/1", "data": {"n": 100}})
    ops.append({"op": "set", "key": "p/text", "data": "not an object"})
    for op in ops:
        op["scope"] = "session"
    assert (
        await client.post(f"{API}/batch", json={"ops": ops}, headers=SESSION)
    ).status_code == 200


async def _query(client: httpx.AsyncClient, **body: Any) -> list[str]:
    reply = await client.post(f"{API}/query", json={"scope": "session", **body}, headers=SESSION)
    assert reply.status_code == 200, reply.text
    return [r["key"] for r in reply.json()["records"]]


async def test_query_filters_pages_and_scopes(client: httpx.AsyncClient, filled: None) -> None:
    assert await _query(client, prefix="p/", filter={"tag": "even"}, limit=100) == [
        "p/0",
        "p/2",
        "p/4",
        "p/6",
    ]
    assert await _query(client, prefix="p/", filter={"n": {"$gt": 2, "$lte": 5}}) == [
        "p/3",
        "p/4",
        "p/5",
    ]
    assert await _query(client, prefix="p/", filter={"tag": "odd"}, offset=1, limit=2) == [
        "p/3",
        "p/5",
    ]
    assert await _query(client, filter={"n": {"$gte": 7}}) == ["p/7", "q/1"]
    assert len(await _query(client, limit=100)) == 10  # no filter: every key, objects or not
    other = await client.post(
        f"{API}/query", json={"scope": "session"}, headers={"X-Session-ID": "s2"}
    )
    assert other.json() == {"records": []}


async def test_keys_pages_by_after(client: httpx.AsyncClient, filled: None) -> None:
    seen: list[str] = []
    after = None
    while True:
        body = {"scope": "session", "prefix": "p/", "limit": 3, "after": after}
        page = (await client.post(f"{API}/keys", json=body, headers=SESSION)).json()
        seen.extend(page["keys"])
        after = page["next"]
        if after is None:
            break
    assert seen == [*(f"p/{i}" for i in range(8)), "p/text"]


async def test_query_ranks_by_vectors(client: httpx.AsyncClient, filled: None) -> None:
    for key, vector in [("p/1", [1.0, 0.0]), ("p/2", [0.6, 0.8]), ("p/3", [0.0, 1.0])]:
        body = {"key": f"{key}#v", "embedding": vector, "metadata": {"record_key": key}}
        reply = await client.post(
            f"{API}/vector/set", json=body | {"scope": "session"}, headers=SESSION
        )
        assert reply.status_code == 200
    reply = await client.post(
        f"{API}/query",
        json={"scope": "session", "prefix": "p/", "query_embedding": [1.0, 0.1], "limit": 4},
        headers=SESSION,
    )
    records = reply.json()["records"]
    assert [r["key"] for r in records][:3] == ["p/1", "p/2", "p/3"]
    assert records[0]["score"] > records[1]["score"] > records[2]["score"]
    assert records[3]["score"] is None  # unranked matches fill the page
    filtered = await _query(client, prefix="p/", query_embedding=[1.0, 0.1], filter={"tag": "odd"})
    assert filtered[:2] == ["p/1", "p/3"]


@pytest.mark.parametrize(
    "route, body, status, code",
    [
        ("query", {}, 400, "missing_scope"),
        ("query", {"scope": "nope"}, 400, "invalid_scope"),
        ("query", {"scope": "session", "filter": []}, 400, "invalid_filters"),
        ("query", {"scope": "session", "filter": {"n": {"$in": [1]}}}, 400, "invalid_filters"),
        ("query", {"scope": "session", "filter": {"n": {"$gt": "3"}}}, 400, "invalid_filters"),
        ("query", {"scope": "session", "filter": {"o": {"a": {"$in": 1}}}}, 400, "invalid_filters"),
        ("query", {"scope": "session", "filter": {"o": [{"$lt": "x"}]}}, 400, "invalid_filters"),
        ("query", {"scope": "session", "limit": 0}, 400, "invalid_parameter"),
        ("query", {"scope": "session", "offset": -1}, 400, "invalid_parameter"),
        ("query", {"scope": "session", "prefix": 5}, 400, "invalid_parameter"),
        ("query", {"scope": "session", "query_embedding": ["x"]}, 400, "invalid_embedding"),
        ("query", {"scope": "actor"}, 400, "missing_scope_id"),
        ("keys", {"scope": "session", "limit": 10_001}, 400, "invalid_parameter"),
        ("keys", {"scope": "session", "after": 3}, 400, "invalid_parameter"),
        ("keys", {"scope": "session", "after": "a\x00"}, 400, "invalid_parameter"),
        ("query", {"scope": "session", "prefix": "p/\x00"}, 400, "invalid_parameter"),
        ("keys", {}, 400, "missing_scope"),
    ],
)
async def test_bad_input_is_refused_and_changes_nothing(
    client: httpx.AsyncClient,
    filled: None,
    route: str,
    body: dict[str, Any],
    status: int,
    code: str,
) -> None:
    before = await _query(client, limit=100)
    reply = await client.post(f"{API}/{route}", json=body, headers=SESSION)
    assert reply.status_code == status
    error = reply.json()
    assert error["code"] == code and isinstance(error["error"], str)
    assert isinstance(error["details"], dict)
    assert await _query(client, limit=100) == before


async def test_a_refusal_names_unknown_fields(client: httpx.AsyncClient) -> None:
    body = {"scope": "session", "filters": {"n": 1}, "limit": 0}  # "filters": misspelt
    reply = await client.post(f"{API}/query", json=body, headers=SESSION)
    assert reply.status_code == 400
    assert reply.json()["details"]["unknown_fields"] == ["filters"]
