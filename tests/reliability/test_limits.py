"""Limits: key length, value size (413), JSON depth, scope id length, batch sizes, request
bodies read incrementally and cut off, subscribers per client. Refused input never changes
stored data."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from agentfield_asgi.events import EventHub, SubscriberLimit
from agentfield_asgi.server.app import MemoryService
from agentfield_asgi.store.base import EventFilter
from agentfield_asgi.testing import ServerProcess

from .conftest import ServiceFactory
from .helpers import API, every_event, http_client


async def assert_unchanged(service: MemoryService, client: httpx.AsyncClient, last_id: int) -> None:
    assert await service.store.last_event_id() == last_id
    r = await client.post(f"{API}/get", json={"key": "sentinel"})
    assert r.json()["data"] == {"keep": True}


@pytest.fixture
async def guarded(
    make_service: ServiceFactory,
) -> AsyncIterator[tuple[MemoryService, httpx.AsyncClient]]:
    async with (
        make_service(max_value_bytes=1000, max_json_depth=8) as service,
        http_client(service) as client,
    ):
        await client.post(f"{API}/set", json={"key": "sentinel", "data": {"keep": True}})
        yield service, client


async def test_key_length_counts_utf8_bytes(
    guarded: tuple[MemoryService, httpx.AsyncClient],
) -> None:
    service, client = guarded
    fits = "€" * 341 + "a"  # 1,024 bytes
    assert (await client.post(f"{API}/set", json={"key": fits, "data": 1})).status_code == 200
    last = await service.store.last_event_id()
    for bad in ("€" * 342, "a" * 1025, "", "a\x00b", 5, None, ["k"]):
        r = await client.post(f"{API}/set", json={"key": bad, "data": 1})
        assert r.status_code == 400 and r.json()["code"] == "invalid_key", repr(bad)[:40]
        r = await client.post(f"{API}/get", json={"key": bad})
        assert r.status_code == 400
    await assert_unchanged(service, client, last)


async def test_value_size_is_413(guarded: tuple[MemoryService, httpx.AsyncClient]) -> None:
    service, client = guarded
    at_limit = "x" * 998  # + two quotes = 1,000 bytes of JSON
    assert (await client.post(f"{API}/set", json={"key": "v", "data": at_limit})).status_code == 200
    last = await service.store.last_event_id()
    for op in ("set", "batch"):
        body: dict[str, Any] = {"key": "v", "data": at_limit + "x"}
        if op == "batch":
            body = {"ops": [{"op": "set", "key": "w", "data": 1}, {"op": "set", **body}]}
        r = await client.post(f"{API}/{op}", json=body)
        assert r.status_code == 413, op
        assert r.json()["code"] == "payload_too_large"
        assert r.json()["details"]["max_bytes"] == 1000
    assert (await client.post(f"{API}/get", json={"key": "v"})).json()["data"] == at_limit
    assert (await client.post(f"{API}/get", json={"key": "w"})).status_code == 404
    await assert_unchanged(service, client, last)


async def test_json_depth(guarded: tuple[MemoryService, httpx.AsyncClient]) -> None:
    service, client = guarded

    def nested(depth: int) -> Any:
        value: Any = 1
        for i in range(depth):
            value = [value] if i % 2 else {"a": value}
        return value

    assert (
        await client.post(f"{API}/set", json={"key": "d", "data": nested(8)})
    ).status_code == 200
    last = await service.store.last_event_id()
    r = await client.post(f"{API}/set", json={"key": "d", "data": nested(9)})
    assert r.status_code == 400 and r.json()["code"] == "too_deep"
    # Far deeper than any parser should recurse: refused while parsing, not a crash.
    deep = b'{"key": "d", "data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    r = await client.post(f"{API}/set", content=deep, headers={"content-type": "application/json"})
    assert r.status_code in (400, 413)
    await assert_unchanged(service, client, last)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"   ",
        b"not json",
        b"[1, 2]",
        b'"str"',
        b"null",
        b'{"key": "k", "data": 1',
        b"\xff\xfe{}",
        b'{"key": "\\ud800", "data": 1}',
        b'{"key": "k", "data": 1e999}',
    ],
)
async def test_malformed_bodies(
    guarded: tuple[MemoryService, httpx.AsyncClient], body: bytes
) -> None:
    service, client = guarded
    last = await service.store.last_event_id()
    for op in ("set", "get", "delete", "incr", "batch", "get_many", "clear"):
        r = await client.post(
            f"{API}/{op}", content=body, headers={"content-type": "application/json"}
        )
        assert r.status_code == 400, (op, body)
        assert set(r.json()) == {"error", "code", "details"}
    await assert_unchanged(service, client, last)


async def test_nul_in_values_is_refused(guarded: tuple[MemoryService, httpx.AsyncClient]) -> None:
    service, client = guarded
    last = await service.store.last_event_id()
    r = await client.post(f"{API}/set", json={"key": "k", "data": {"a": "x\x00y"}})
    assert r.status_code == 400 and r.json()["code"] == "invalid_value"
    await assert_unchanged(service, client, last)


async def test_scope_id_length(guarded: tuple[MemoryService, httpx.AsyncClient]) -> None:
    service, client = guarded
    last = await service.store.last_event_id()
    long_id = {"X-Session-ID": "s" * 1025}
    for op, body in (
        ("set", {"key": "k", "data": 1}),
        ("get", {"key": "k"}),
        ("clear", {"scope": "session"}),
    ):
        r = await client.post(f"{API}/{op}", json=body, headers=long_id)
        assert r.status_code == 400 and r.json()["code"] == "invalid_scope_id", op
    ok = await client.post(
        f"{API}/set", json={"key": "k", "data": 1}, headers={"X-Session-ID": "s" * 1024}
    )
    assert ok.status_code == 200 and ok.json()["scope_id"] == "s" * 1024
    assert await service.store.last_event_id() == last + 1


async def test_body_is_read_incrementally_and_cut_off(
    guarded: tuple[MemoryService, httpx.AsyncClient],
) -> None:
    service, client = guarded
    chunk = b"x" * 8192
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'{"key": "k", "data": "'
        for _ in range(10_000):  # 80 MB if it were all read
            sent += 1
            yield chunk

    last = await service.store.last_event_id()
    r = await client.post(
        f"{API}/set", content=endless(), headers={"content-type": "application/json"}
    )
    assert r.status_code == 413 and r.json()["code"] == "payload_too_large"
    limit = 1000 + 64 * 1024
    assert sent * len(chunk) <= limit + 2 * len(chunk)  # stopped right after the limit
    await assert_unchanged(service, client, last)


def test_declared_length_refused_before_the_body_on_a_live_server(tmp_path: Any) -> None:
    """A client announcing a huge body gets 413 at once: the server does not wait for it."""
    with ServerProcess(["--database-url", f"sqlite:///{tmp_path / 'm.db'}"]) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(
                b"POST /api/v1/memory/set HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b'Content-Length: 1000000000\r\n\r\n{"key": "k"'
            )
            reply = b""
            while b"\r\n\r\n" not in reply or b"payload_too_large" not in reply:
                data = sock.recv(65536)
                if not data:
                    break
                reply += data
        assert reply.startswith(b"HTTP/1.1 413")
        assert b'"code":"payload_too_large"' in reply
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert client.post("/api/v1/memory/get", json={"key": "k"}).status_code == 404


async def test_batch_and_get_many_sizes(make_service: ServiceFactory) -> None:
    async with make_service(max_batch_ops=5) as service, http_client(service) as client:
        six = [{"op": "set", "key": f"k{i}", "data": i} for i in range(6)]
        r = await client.post(f"{API}/batch", json={"ops": six})
        assert r.status_code == 400 and r.json()["details"]["max"] == 5
        r = await client.post(f"{API}/get_many", json={"keys": [f"k{i}" for i in range(6)]})
        assert r.status_code == 400 and r.json()["code"] == "too_many_keys"
        assert await every_event(service.store) == []


async def test_subscribers_per_client(service: MemoryService) -> None:
    hub = EventHub(service.store, queue_size=10, max_per_client=3)
    await hub.start()
    try:
        subs = [hub.subscribe(EventFilter(), client="10.0.0.1") for _ in range(3)]
        with pytest.raises(SubscriberLimit):
            hub.subscribe(EventFilter(), client="10.0.0.1")
        hub.subscribe(EventFilter(), client="10.0.0.2")  # another client is unaffected
        hub.unsubscribe(subs[0])
        hub.subscribe(EventFilter(), client="10.0.0.1")  # a freed slot can be reused
        assert hub.subscriber_count == 4
    finally:
        await hub.stop()


async def test_slow_subscriber_is_cut_off_without_slowing_writes(
    service: MemoryService, client: httpx.AsyncClient
) -> None:
    hub = service.hub
    slow = hub.subscribe(EventFilter(), client="slow")
    for i in range(service.settings.subscriber_queue_size + 5):
        await service.store.set(_set_op(f"k{i}"))
    await asyncio.sleep(0)
    assert slow.closed  # overflowed and dropped...
    assert hub.subscriber_count == 0  # ...and no longer counted
    r = await client.post(f"{API}/get", json={"key": "k0"})
    assert r.status_code == 200


def _set_op(key: str) -> Any:
    from agentfield_asgi.store.base import SetOp

    return SetOp("global", "global", key, b"1")
