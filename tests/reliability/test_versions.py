"""Versions and compare-and-set: if_version in the body, If-Match, 412 with the current record."""

from __future__ import annotations

import asyncio

import httpx

from agentfield_asgi.server.app import MemoryService

from .helpers import API, every_event

SESSION = {"X-Session-ID": "s-1"}


async def test_version_increases_on_every_write(client: httpx.AsyncClient) -> None:
    versions = []
    for value in range(4):
        r = await client.post(f"{API}/set", json={"key": "k", "data": value})
        assert r.status_code == 200
        versions.append(r.json()["version"])
        assert r.headers["etag"] == f'"{versions[-1]}"'
    assert versions == [1, 2, 3, 4]
    got = await client.post(f"{API}/get", json={"key": "k"})
    assert got.json()["version"] == 4 and got.headers["etag"] == '"4"'


async def test_if_version_mismatch_is_412_with_current_record(
    client: httpx.AsyncClient, service: MemoryService
) -> None:
    await client.post(f"{API}/set", json={"key": "k", "data": "one"}, headers=SESSION)
    await client.post(f"{API}/set", json={"key": "k", "data": "two"}, headers=SESSION)
    before = await service.store.last_event_id()
    r = await client.post(
        f"{API}/set", json={"key": "k", "data": "lost", "if_version": 1}, headers=SESSION
    )
    assert r.status_code == 412
    body = r.json()
    assert body["code"] == "version_conflict"
    assert body["details"]["current_version"] == 2
    assert body["details"]["current"]["data"] == "two"
    assert body["details"]["current"]["version"] == 2
    assert body["details"]["current"]["scope"] == "session"
    # Nothing changed: same value, no event.
    assert (await client.post(f"{API}/get", json={"key": "k"}, headers=SESSION)).json()[
        "data"
    ] == "two"
    assert await service.store.last_event_id() == before
    ok = await client.post(
        f"{API}/set", json={"key": "k", "data": "three", "if_version": 2}, headers=SESSION
    )
    assert ok.status_code == 200 and ok.json()["version"] == 3


async def test_if_version_zero_means_only_if_absent(client: httpx.AsyncClient) -> None:
    first = await client.post(f"{API}/set", json={"key": "lock", "data": "a", "if_version": 0})
    assert first.status_code == 200 and first.json()["version"] == 1
    second = await client.post(f"{API}/set", json={"key": "lock", "data": "b", "if_version": 0})
    assert second.status_code == 412
    assert second.json()["details"]["current"]["data"] == "a"
    # After a delete the key is absent again.
    assert (await client.post(f"{API}/delete", json={"key": "lock"})).status_code == 204
    third = await client.post(f"{API}/set", json={"key": "lock", "data": "c", "if_version": 0})
    assert third.status_code == 200


async def test_only_one_of_many_concurrent_create_if_absent_wins(client: httpx.AsyncClient) -> None:
    replies = await asyncio.gather(
        *(
            client.post(f"{API}/set", json={"key": "leader", "data": n, "if_version": 0})
            for n in range(20)
        )
    )
    statuses = sorted(r.status_code for r in replies)
    assert statuses == [200] + [412] * 19
    winner = next(r.json()["data"] for r in replies if r.status_code == 200)
    assert (await client.post(f"{API}/get", json={"key": "leader"})).json()["data"] == winner


async def test_if_match_header(client: httpx.AsyncClient) -> None:
    await client.post(f"{API}/set", json={"key": "k", "data": 1})
    stale = await client.post(
        f"{API}/set", json={"key": "k", "data": 2}, headers={"If-Match": '"7"'}
    )
    assert stale.status_code == 412
    fresh = await client.post(
        f"{API}/set", json={"key": "k", "data": 2}, headers={"If-Match": '"1"'}
    )
    assert fresh.status_code == 200 and fresh.json()["version"] == 2
    bad = await client.post(f"{API}/set", json={"key": "k", "data": 3}, headers={"If-Match": "abc"})
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_parameter"
    # A body if_version wins over the header.
    both = await client.post(
        f"{API}/set", json={"key": "k", "data": 3, "if_version": 2}, headers={"If-Match": '"9"'}
    )
    assert both.status_code == 200


async def test_conditional_delete(client: httpx.AsyncClient, service: MemoryService) -> None:
    await client.post(f"{API}/set", json={"key": "k", "data": 1})
    wrong = await client.post(f"{API}/delete", json={"key": "k", "if_version": 5})
    assert wrong.status_code == 412 and wrong.json()["details"]["current"]["data"] == 1
    assert (await client.post(f"{API}/get", json={"key": "k"})).status_code == 200
    assert (
        await client.post(f"{API}/delete", json={"key": "k", "if_version": 1})
    ).status_code == 204
    assert (await client.post(f"{API}/get", json={"key": "k"})).status_code == 404
    # Absent is version 0: a delete expecting another version conflicts, expecting 0 is a no-op.
    absent = await client.post(f"{API}/delete", json={"key": "k", "if_version": 1})
    assert absent.status_code == 412 and absent.json()["details"]["current"] is None
    assert (
        await client.post(f"{API}/delete", json={"key": "k", "if_version": 0})
    ).status_code == 204
    actions = [e.action for e in await every_event(service.store)]
    assert actions == ["set", "delete"]


async def test_bad_if_version_is_400(client: httpx.AsyncClient) -> None:
    for bad in (-1, "1", 1.5, True, [1]):
        r = await client.post(f"{API}/set", json={"key": "k", "data": 1, "if_version": bad})
        assert r.status_code == 400, bad
        assert r.json()["code"] == "invalid_parameter"
    assert (await client.post(f"{API}/get", json={"key": "k"})).status_code == 404
