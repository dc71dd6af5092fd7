"""Bad input to the memory routes: a 4xx with the protocol's error body, and stored data
(records and the event log) exactly as before. In process, on both backends."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from memory_api_support import assert_error, headers_for, snapshot

from agentfield_asgi.server.app import MemoryService
from agentfield_asgi.server.http import body_limit
from agentfield_asgi.settings import Settings

API = "/api/v1/memory"
MIB = 1024 * 1024


def nested(depth: int) -> Any:
    """A JSON value nesting ``depth`` containers deep (alternating lists and objects)."""
    value: Any = 0
    for i in range(depth):
        value = [value] if i % 2 else {"x": value}
    return value


@pytest.fixture
async def seeded(client: httpx.AsyncClient, service: MemoryService) -> tuple[Any, ...]:
    """Values under the key the bad requests aim at, in every scope; returns the snapshot."""
    everywhere = headers_for("workflow", "session", "actor")
    for scope in ("workflow", "session", "actor", "global"):
        r = await client.post(
            f"{API}/set",
            json={"key": "a", "data": f"kept in {scope}", "scope": scope},
            headers=everywhere,
        )
        assert r.status_code == 200
    return await snapshot(service)


def _raw(body: bytes) -> dict[str, Any]:
    return {"content": body, "headers": {"content-type": "application/json"}}


BAD_BODIES: list[tuple[str, dict[str, Any], int, str]] = [
    ("malformed JSON", _raw(b'{"key": "a", "data": '), 400, "invalid_json"),
    ("trailing garbage", _raw(b'{"key": "a", "data": 1} x'), 400, "invalid_json"),
    ("not UTF-8", _raw(b'{"key": "\xff", "data": 1}'), 400, "invalid_json"),
    ("NaN", _raw(b'{"key": "a", "data": NaN}'), 400, "invalid_json"),
    ("empty body", _raw(b""), 400, "invalid_json"),
    ("whitespace body", _raw(b"  \n"), 400, "invalid_json"),
    ("array body", {"json": [{"key": "a", "data": 1}]}, 400, "invalid_json"),
    ("string body", {"json": "a"}, 400, "invalid_json"),
    ("null body", {"json": None}, 400, "invalid_json"),
    ("number body", {"json": 5}, 400, "invalid_json"),
    ("missing key", {"json": {"data": 1}}, 400, "invalid_key"),
    ("null key", {"json": {"key": None, "data": 1}}, 400, "invalid_key"),
    ("empty key", {"json": {"key": "", "data": 1}}, 400, "invalid_key"),
    ("number key", {"json": {"key": 5, "data": 1}}, 400, "invalid_key"),
    ("bool key", {"json": {"key": True, "data": 1}}, 400, "invalid_key"),
    ("list key", {"json": {"key": ["a"], "data": 1}}, 400, "invalid_key"),
    ("object key", {"json": {"key": {"a": 1}, "data": 1}}, 400, "invalid_key"),
    ("key of 1025 ASCII bytes", {"json": {"key": "a" * 1025, "data": 1}}, 400, "invalid_key"),
    ("key of 1026 UTF-8 bytes", {"json": {"key": "é" * 513, "data": 1}}, 400, "invalid_key"),
    ("key of 1028 UTF-8 bytes", {"json": {"key": "😀" * 257, "data": 1}}, 400, "invalid_key"),
    ("NUL in key", {"json": {"key": "a\x00", "data": 1}}, 400, "invalid_key"),
    ("unknown scope", {"json": {"key": "a", "data": 1, "scope": "team"}}, 400, "invalid_scope"),
    (
        "scope in capitals",
        {"json": {"key": "a", "data": 1, "scope": "Global"}},
        400,
        "invalid_scope",
    ),
    ("number scope", {"json": {"key": "a", "data": 1, "scope": 1}}, 400, "invalid_scope"),
    ("list scope", {"json": {"key": "a", "data": 1, "scope": ["global"]}}, 400, "invalid_scope"),
]

SET_ONLY: list[tuple[str, dict[str, Any], int, str]] = [
    ("missing data", {"json": {"key": "a"}}, 400, "missing_data"),
    ("value over 1 MiB", {"json": {"key": "a", "data": "x" * MIB}}, 413, "payload_too_large"),
    ("too deep", {"json": {"key": "a", "data": nested(65)}}, 400, "too_deep"),
    ("deeper than orjson encodes", {"json": {"key": "a", "data": nested(300)}}, 400, "too_deep"),
    (
        "deeper than the parser allows",
        _raw(b'{"key": "a", "data": ' + b"[" * 2000 + b"]" * 2000 + b"}"),
        400,
        "invalid_json",
    ),
    ("NUL in value", {"json": {"key": "a", "data": {"s": "a\x00b"}}}, 400, "invalid_value"),
    ("metadata not an object", {"json": {"key": "a", "data": 1, "metadata": []}}, 400, None),
    ("metadata a string", {"json": {"key": "a", "data": 1, "metadata": "m"}}, 400, None),
]


@pytest.mark.parametrize("route", ["set", "get", "delete"])
@pytest.mark.parametrize(
    ("case", "kwargs", "status", "code"), BAD_BODIES, ids=[c[0] for c in BAD_BODIES]
)
async def test_bad_body_is_refused_and_changes_nothing(
    client: httpx.AsyncClient,
    service: MemoryService,
    seeded: tuple[Any, ...],
    route: str,
    case: str,
    kwargs: dict[str, Any],
    status: int,
    code: str,
) -> None:
    if route != "set" and "json" in kwargs and isinstance(kwargs["json"], dict):
        kwargs = {"json": {k: v for k, v in kwargs["json"].items() if k != "data"}}
    kwargs = {**kwargs, "headers": {**kwargs.get("headers", {}), **headers_for("session")}}
    r = await client.post(f"{API}/{route}", **kwargs)
    assert_error(r, status, code)
    assert await snapshot(service) == seeded


@pytest.mark.parametrize(
    ("case", "kwargs", "status", "code"), SET_ONLY, ids=[c[0] for c in SET_ONLY]
)
async def test_bad_set_is_refused_and_changes_nothing(
    client: httpx.AsyncClient,
    service: MemoryService,
    seeded: tuple[Any, ...],
    case: str,
    kwargs: dict[str, Any],
    status: int,
    code: str | None,
) -> None:
    r = await client.post(f"{API}/set", **kwargs)
    assert_error(r, status, code)
    assert await snapshot(service) == seeded


async def test_key_of_exactly_1024_bytes_is_accepted(client: httpx.AsyncClient) -> None:
    for key in ("k" * 1024, "é" * 512, "😀" * 256):
        assert len(key.encode()) == 1024
        r = await client.post(f"{API}/set", json={"key": key, "data": 1, "scope": "global"})
        assert r.status_code == 200, r.text
        assert r.json()["key"] == key
        got = await client.post(f"{API}/get", json={"key": key})
        assert got.status_code == 200 and got.json()["key"] == key


async def test_value_of_exactly_the_limit_is_accepted(client: httpx.AsyncClient) -> None:
    text = "x" * (MIB - 2)  # plus two quotes: 1 MiB of compact JSON
    assert len(orjson.dumps(text)) == MIB
    r = await client.post(f"{API}/set", json={"key": "big", "data": text, "scope": "global"})
    assert r.status_code == 200
    assert (await client.post(f"{API}/get", json={"key": "big"})).json()["data"] == text
    r = await client.post(f"{API}/set", json={"key": "big", "data": text + "x", "scope": "global"})
    assert_error(r, 413, "payload_too_large")
    assert (await client.post(f"{API}/get", json={"key": "big"})).json()["data"] == text


async def test_limit_counts_compact_utf8_not_the_escaped_request(client: httpx.AsyncClient) -> None:
    """Python's json.dumps escapes non-ASCII (6 bytes a character): a value within the
    limit as compact UTF-8 JSON is accepted however the client encoded it."""
    text = "é" * ((MIB - 2) // 2)  # 2 bytes a character in UTF-8
    assert len(orjson.dumps(text)) <= MIB
    body = json.dumps({"key": "escaped", "data": text, "scope": "global"}, indent=1).encode()
    assert len(body) > 3 * MIB
    r = await client.post(f"{API}/set", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text[:200]
    assert (await client.post(f"{API}/get", json={"key": "escaped"})).json()["data"] == text


async def test_depth_limit_is_exact(client: httpx.AsyncClient) -> None:
    ok = await client.post(f"{API}/set", json={"key": "d", "data": nested(64), "scope": "global"})
    assert ok.status_code == 200
    # Brackets inside strings are not nesting.
    text = {"s": "[" * 500 + "{" * 500}
    ok = await client.post(f"{API}/set", json={"key": "s", "data": text, "scope": "global"})
    assert ok.status_code == 200
    wide = [nested(63)] * 100
    ok = await client.post(f"{API}/set", json={"key": "w", "data": wide, "scope": "global"})
    assert ok.status_code == 200
    too_wide_deep = [nested(3)] * 100 + [nested(65)]
    r = await client.post(f"{API}/set", json={"key": "w", "data": too_wide_deep, "scope": "global"})
    assert_error(r, 400, "too_deep")


async def test_declared_oversized_body_is_refused_unread(
    client: httpx.AsyncClient, service: MemoryService, seeded: tuple[Any, ...]
) -> None:
    limit = body_limit(Settings())
    body = b'{"key": "a", "data": "' + b"x" * limit + b'"}'
    r = await client.post(f"{API}/set", content=body, headers={"content-type": "application/json"})
    assert_error(r, 413, "payload_too_large")
    assert await snapshot(service) == seeded


async def test_streamed_body_without_length_is_cut_off(
    client: httpx.AsyncClient, service: MemoryService, seeded: tuple[Any, ...]
) -> None:
    limit = body_limit(Settings())
    chunk = b" " * 65536
    total_chunks = 10 * limit // len(chunk)
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'{"key": "a", "data": "'
        for _ in range(total_chunks):
            sent += len(chunk)
            yield chunk

    request = client.build_request("POST", f"{API}/set", content=body())
    assert "content-length" not in request.headers
    r = await client.send(request)
    assert_error(r, 413, "payload_too_large")
    # The server stopped reading soon after the limit, long before the end of the body.
    assert sent <= limit + 2 * len(chunk)
    assert await snapshot(service) == seeded


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/set"),
        ("PUT", "/set"),
        ("DELETE", "/set"),
        ("GET", "/get"),
        ("PATCH", "/get"),
        ("GET", "/delete"),
        ("DELETE", "/delete"),
        ("POST", "/list"),
        ("PUT", "/list"),
    ],
)
async def test_unsupported_method_is_405_with_error_body(
    client: httpx.AsyncClient,
    service: MemoryService,
    seeded: tuple[Any, ...],
    method: str,
    path: str,
) -> None:
    r = await client.request(
        method, API + path, json={"key": "a", "data": "changed"}, params={"scope": "global"}
    )
    assert_error(r, 405, "method_not_allowed")
    assert r.headers.get("allow")
    assert method not in r.headers["allow"]
    assert await snapshot(service) == seeded


@pytest.mark.parametrize(
    "path", ["/api/v1/memory/nope", "/api/v1/memory", "/api/v2/memory/set", "/nope", "/"]
)
async def test_unknown_route_is_404_with_error_body(
    client: httpx.AsyncClient, service: MemoryService, seeded: tuple[Any, ...], path: str
) -> None:
    for method in ("GET", "POST"):
        r = await client.request(method, path, json={"key": "a", "data": "changed"})
        assert_error(r, 404, "not_found")
    assert await snapshot(service) == seeded


@pytest.mark.parametrize(
    ("params", "headers", "code"),
    [
        ({}, {}, "missing_scope"),
        ({"scope": ""}, {}, "missing_scope"),
        ({"scope": "team"}, {}, "invalid_scope"),
        ({"scope": "session"}, {}, "missing_scope_id"),
        ({"scope": "workflow"}, headers_for("session", "actor"), "missing_scope_id"),
    ],
)
async def test_bad_list_is_400(
    client: httpx.AsyncClient, params: dict[str, str], headers: dict[str, str], code: str
) -> None:
    assert_error(await client.get(f"{API}/list", params=params, headers=headers), 400, code)
