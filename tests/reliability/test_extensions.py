"""Extensions: incr, batch (all or nothing), get_many, clear, list paging, exact exists."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from agentfield_asgi.server.app import MemoryService

from .conftest import ServiceFactory
from .helpers import API, every_event, http_client

WF = {"X-Workflow-ID": "wf-1", "X-Session-ID": "s-1"}


async def get(client: httpx.AsyncClient, key: str, **extra: Any) -> httpx.Response:
    return await client.post(f"{API}/get", json={"key": key, **extra.pop("body", {})}, **extra)


# ---------------------------------------------------------------- incr


async def test_incr_creates_at_zero_and_adds(client: httpx.AsyncClient) -> None:
    r = await client.post(f"{API}/incr", json={"key": "n"})
    assert r.status_code == 200 and r.json()["data"] == 1 and r.json()["version"] == 1
    r = await client.post(f"{API}/incr", json={"key": "n", "by": 41})
    assert r.json()["data"] == 42 and r.json()["version"] == 2
    r = await client.post(f"{API}/incr", json={"key": "n", "by": -2.5})
    assert r.json()["data"] == 39.5
    assert (await get(client, "n")).json()["data"] == 39.5


async def test_incr_follows_scope_rules(client: httpx.AsyncClient) -> None:
    r = await client.post(f"{API}/incr", json={"key": "n"}, headers=WF)
    assert (r.json()["scope"], r.json()["scope_id"]) == ("workflow", "wf-1")
    r = await client.post(f"{API}/incr", json={"key": "n", "scope": "session"}, headers=WF)
    assert (r.json()["scope"], r.json()["data"]) == ("session", 1)
    missing = await client.post(f"{API}/incr", json={"key": "n", "scope": "actor"}, headers=WF)
    assert missing.status_code == 400 and missing.json()["code"] == "missing_scope_id"


async def test_incr_refuses_non_numbers_and_overflow(
    client: httpx.AsyncClient, service: MemoryService
) -> None:
    await client.post(f"{API}/set", json={"key": "s", "data": "text"})
    await client.post(f"{API}/set", json={"key": "big", "data": 2**63 - 2})
    await client.post(f"{API}/set", json={"key": "t", "data": True})
    before = await service.store.last_event_id()
    r = await client.post(f"{API}/incr", json={"key": "s"})
    assert r.status_code == 400 and r.json()["code"] == "not_a_number"
    r = await client.post(f"{API}/incr", json={"key": "t"})
    assert r.status_code == 400 and r.json()["code"] == "not_a_number"
    r = await client.post(f"{API}/incr", json={"key": "big", "by": 5})
    assert r.status_code == 400 and r.json()["code"] == "out_of_range"
    for by in ("1", True, None and 1, 2**60, [1]):
        if by is None:
            continue
        r = await client.post(f"{API}/incr", json={"key": "n", "by": by})
        assert r.status_code == 400, by
    assert await service.store.last_event_id() == before
    assert (await get(client, "big")).json()["data"] == 2**63 - 2
    assert (await get(client, "n")).status_code == 404


# ---------------------------------------------------------------- batch


async def test_batch_applies_all_ops_in_order_with_events(
    client: httpx.AsyncClient, service: MemoryService
) -> None:
    await client.post(f"{API}/set", json={"key": "old", "data": 0})
    r = await client.post(
        f"{API}/batch",
        json={
            "ops": [
                {"op": "set", "key": "a", "data": {"x": 1}},
                {"op": "set", "key": "a", "data": {"x": 2}},
                {"op": "delete", "key": "old", "scope": "global"},
                {"op": "delete", "key": "never"},
                {"op": "incr", "key": "n", "by": 3},
                {"op": "set", "key": "b", "data": None, "scope": "session"},
            ]
        },
        headers=WF,
    )
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [res.get("version") for res in results] == [1, 2, None, None, 1, 1]
    assert results[2]["deleted"] is True and results[3]["deleted"] is False
    assert results[5]["scope"] == "session" and results[5]["data"] is None
    events = await every_event(service.store)
    assert [(e.action, e.key) for e in events[1:]] == [
        ("set", "a"),
        ("set", "a"),
        ("delete", "old"),
        ("set", "n"),
        ("set", "b"),
    ]  # the absent key's delete records no event
    assert (await get(client, "old")).status_code == 404
    assert (await get(client, "a", headers=WF)).json()["data"] == {"x": 2}


async def test_batch_is_all_or_nothing(client: httpx.AsyncClient, service: MemoryService) -> None:
    await client.post(f"{API}/set", json={"key": "x", "data": "keep"})
    before = await service.store.last_event_id()
    r = await client.post(
        f"{API}/batch",
        json={
            "ops": [
                {"op": "set", "key": "new", "data": 1},
                {"op": "delete", "key": "x"},
                {"op": "set", "key": "x", "data": "lost", "if_version": 1},
            ]
        },
    )
    # The delete made x absent, so the conditional set of version 1 conflicts: all undone.
    assert r.status_code == 412
    assert r.json()["details"]["index"] == 2 and r.json()["details"]["applied"] is False
    assert (await get(client, "new")).status_code == 404
    assert (await get(client, "x")).json()["data"] == "keep"
    assert await service.store.last_event_id() == before

    r = await client.post(
        f"{API}/batch",
        json={"ops": [{"op": "set", "key": "s", "data": "t"}, {"op": "incr", "key": "x"}]},
    )
    assert r.status_code == 400 and r.json()["code"] == "not_a_number"
    assert r.json()["details"]["index"] == 1
    assert (await get(client, "s")).status_code == 404


async def test_batch_validation(make_service: ServiceFactory) -> None:
    async with make_service(max_batch_ops=3) as service, http_client(service) as client:
        cases: list[tuple[Any, str]] = [
            ({"ops": []}, "invalid_parameter"),
            ({"ops": "x"}, "invalid_parameter"),
            ({"ops": [{"op": "set", "key": "k", "data": 1}] * 4}, "too_many_operations"),
            ({"ops": [{"op": "drop", "key": "k"}]}, "invalid_operation"),
            ({"ops": [1]}, "invalid_operation"),
            ({"ops": [{"op": ["set"], "key": "k", "data": 1}]}, "invalid_operation"),
            ({"ops": [{"op": None, "key": "k"}]}, "invalid_operation"),
            ({"ops": [{"op": "set", "key": "k"}]}, "missing_data"),
            ({"ops": [{"op": "set", "key": "", "data": 1}]}, "invalid_key"),
            ({"ops": [{"op": "set", "key": "k", "data": 1, "scope": "actor"}]}, "missing_scope_id"),
        ]
        for body, code in cases:
            r = await client.post(f"{API}/batch", json=body)
            assert r.status_code == 400, body
            assert r.json()["code"] == code, (body, r.json())
        r = await client.post(
            f"{API}/batch",
            json={
                "ops": [{"op": "set", "key": "ok", "data": 1}, {"op": "set", "key": 5, "data": 1}]
            },
        )
        assert r.json()["details"]["index"] == 1
        assert await service.store.last_event_id() == 0


async def test_batch_body_limit(make_service: ServiceFactory) -> None:
    async with make_service(max_batch_bytes=10_000) as service, http_client(service) as client:
        ops = [{"op": "set", "key": f"k{i}", "data": "v" * 100} for i in range(200)]
        r = await client.post(f"{API}/batch", json={"ops": ops})
        assert r.status_code == 413 and r.json()["code"] == "payload_too_large"
        assert await service.store.last_event_id() == 0


# ---------------------------------------------------------------- get_many


async def test_get_many_honours_the_hierarchy(client: httpx.AsyncClient) -> None:
    await client.post(f"{API}/set", json={"key": "a", "data": "global-a"})
    await client.post(f"{API}/set", json={"key": "b", "data": "global-b"})
    await client.post(
        f"{API}/set", json={"key": "a", "data": "session-a", "scope": "session"}, headers=WF
    )
    await client.post(
        f"{API}/set", json={"key": "n", "data": None, "scope": "workflow"}, headers=WF
    )
    r = await client.post(f"{API}/get_many", json={"keys": ["a", "b", "n", "zz", "a"]}, headers=WF)
    assert r.status_code == 200
    body = r.json()
    assert (
        body["records"]["a"]["data"] == "session-a" and body["records"]["a"]["scope"] == "session"
    )
    assert body["records"]["b"]["data"] == "global-b"
    assert body["records"]["n"]["data"] is None  # a stored null is present
    assert body["missing"] == ["zz"]
    # Each key agrees with a single get.
    for key in ("a", "b", "n"):
        assert (await get(client, key, headers=WF)).json() == body["records"][key]
    scoped = await client.post(
        f"{API}/get_many", json={"keys": ["a", "b"], "scope": "global"}, headers=WF
    )
    assert scoped.json()["records"]["a"]["data"] == "global-a"


async def test_get_many_validation(make_service: ServiceFactory) -> None:
    async with make_service(max_batch_ops=2) as service, http_client(service) as client:
        for body in (
            {"keys": "a"},
            {"keys": ["a", "b", "c"]},
            {"keys": ["a", ""]},
            {"keys": [1]},
            {},
        ):
            r = await client.post(f"{API}/get_many", json=body)
            assert r.status_code == 400, body
        r = await client.post(f"{API}/get_many", json={"keys": []})
        assert r.json() == {"records": {}, "missing": []}


# ---------------------------------------------------------------- clear


async def test_clear_removes_one_scope_id_with_an_event_per_key(
    client: httpx.AsyncClient, service: MemoryService
) -> None:
    other = {"X-Session-ID": "s-2"}
    for key in ("a", "b", "c"):
        await client.post(
            f"{API}/set", json={"key": key, "data": key, "scope": "session"}, headers=WF
        )
    await client.post(
        f"{API}/set", json={"key": "a", "data": "other", "scope": "session"}, headers=other
    )
    await client.post(
        f"{API}/set", json={"key": "a", "data": "wf", "scope": "workflow"}, headers=WF
    )
    before = await service.store.last_event_id()
    r = await client.post(f"{API}/clear", json={"scope": "session"}, headers=WF)
    assert r.status_code == 200
    assert r.json() == {"scope": "session", "scope_id": "s-1", "deleted": 3}
    events = [e for e in await every_event(service.store) if e.id > before]
    assert sorted((e.action, e.key, e.scope_id) for e in events) == [
        ("delete", "a", "s-1"),
        ("delete", "b", "s-1"),
        ("delete", "c", "s-1"),
    ]
    assert {e.previous_data for e in events} == {"a", "b", "c"}
    listed = await client.get(f"{API}/list", params={"scope": "session"}, headers=WF)
    assert listed.json() == []
    assert (await get(client, "a", headers=other)).json()["data"] == "other"
    assert (await get(client, "a", headers=WF)).json()["data"] == "wf"
    again = await client.post(f"{API}/clear", json={"scope": "session"}, headers=WF)
    assert again.json()["deleted"] == 0


async def test_clear_needs_a_scope_and_its_header(client: httpx.AsyncClient) -> None:
    await client.post(f"{API}/set", json={"key": "g", "data": 1})
    r = await client.post(f"{API}/clear", json={})
    assert r.status_code == 400 and r.json()["code"] == "missing_scope"
    r = await client.post(f"{API}/clear", json={"scope": "session"})
    assert r.status_code == 400 and r.json()["code"] == "missing_scope_id"
    assert (await get(client, "g")).status_code == 200


# ---------------------------------------------------------------- list, exists


async def test_list_pages_through_a_scope(client: httpx.AsyncClient) -> None:
    keys = [f"item:{i:03d}" for i in range(25)] + ["other", "item?x"]
    ops = [{"op": "set", "key": k, "data": k} for k in keys]
    assert (await client.post(f"{API}/batch", json={"ops": ops})).status_code == 200
    seen: list[str] = []
    cursor = None
    while True:
        params = {"scope": "global", "prefix": "item:", "limit": 10}
        if cursor:
            params["cursor"] = cursor
        r = await client.get(f"{API}/list", params=params)
        assert r.status_code == 200
        seen += [rec["key"] for rec in r.json()]
        cursor = r.headers.get("x-next-cursor")
        if cursor is None:
            break
    assert seen == sorted(k for k in keys if k.startswith("item:"))
    r = await client.get(f"{API}/list", params={"scope": "global", "pattern": "item[?]*"})
    assert [rec["key"] for rec in r.json()] == ["item?x"]


@pytest.mark.parametrize("value", [None, 0, False, "", [], {}])
async def test_stored_falsy_values_exist(client: httpx.AsyncClient, value: Any) -> None:
    await client.post(f"{API}/set", json={"key": "k", "data": value})
    r = await get(client, "k")
    assert r.status_code == 200 and r.json()["data"] == value
    assert (await get(client, "missing")).status_code == 404
