"""The memory routes over real HTTP: ``agentfield-asgi serve`` on loopback, both backends."""

from __future__ import annotations

import select
import socket
import time

import httpx
from memory_api_support import IDS, RFC3339_Z, assert_error, headers_for

from agentfield_asgi.server.http import body_limit
from agentfield_asgi.settings import Settings
from agentfield_asgi.testing import ServerProcess

API = "/api/v1/memory"


def test_every_route_over_http(live_server: ServerProcess) -> None:
    everywhere = headers_for("workflow", "session", "actor")
    with httpx.Client(base_url=live_server.url, timeout=30) as http:
        # set: unscoped goes to the workflow; scoped to the named scope.
        r = http.post(f"{API}/set", json={"key": "k", "data": {"v": 1}}, headers=everywhere)
        assert r.status_code == 200
        assert (r.json()["scope"], r.json()["scope_id"]) == ("workflow", IDS["workflow"])
        assert RFC3339_Z.match(r.json()["updated_at"])
        r = http.post(f"{API}/set", json={"key": "k", "data": None, "scope": "global"})
        assert r.status_code == 200
        # get: hierarchical, scoped, stored null, miss.
        assert http.post(f"{API}/get", json={"key": "k"}, headers=everywhere).json()["data"] == {
            "v": 1
        }
        got = http.post(f"{API}/get", json={"key": "k"}, headers=headers_for("session"))
        assert got.status_code == 200 and got.json()["data"] is None
        assert got.json()["scope"] == "global"
        assert_error(http.post(f"{API}/get", json={"key": "absent"}), 404, "not_found")
        # list: one scope.
        listed = http.get(f"{API}/list", params={"scope": "workflow"}, headers=everywhere)
        assert listed.status_code == 200
        assert [(i["key"], i["data"]) for i in listed.json()] == [("k", {"v": 1})]
        assert_error(http.get(f"{API}/list"), 400, "missing_scope")
        # delete: 204, also when absent.
        r = http.post(f"{API}/delete", json={"key": "k"}, headers=everywhere)
        assert r.status_code == 204
        assert http.post(f"{API}/delete", json={"key": "k"}, headers=everywhere).status_code == 204
        got = http.post(f"{API}/get", json={"key": "k"}, headers=everywhere)
        assert got.json()["scope"] == "global"
        # errors: bad input, scoped call without header, wrong method, unknown route.
        r = http.post(f"{API}/set", content=b"{nope", headers={"content-type": "application/json"})
        assert_error(r, 400, "invalid_json")
        r = http.post(f"{API}/set", json={"key": "k", "data": 1, "scope": "session"})
        assert_error(r, 400, "missing_scope_id")
        assert_error(http.get(f"{API}/set"), 405, "method_not_allowed")
        assert_error(http.get("/api/v1/nope"), 404, "not_found")
        r = http.post(f"{API}/set", json={"key": "big", "data": "x" * (1024 * 1024)})
        assert_error(r, 413, "payload_too_large")


def test_concurrent_writers_over_http(live_server: ServerProcess) -> None:
    import asyncio

    async def run() -> None:
        limits = httpx.Limits(max_connections=50)
        async with httpx.AsyncClient(base_url=live_server.url, timeout=60, limits=limits) as http:
            responses = await asyncio.gather(
                *(
                    http.post(f"{API}/set", json={"key": f"k{i}", "data": i, "scope": "global"})
                    for i in range(100)
                )
            )
            assert [r.status_code for r in responses] == [200] * 100
            listed = (await http.get(f"{API}/list", params={"scope": "global"})).json()
            assert sorted(i["data"] for i in listed) == list(range(100))

    asyncio.run(run())


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def test_streamed_body_over_limit_is_cut_off_over_http(live_server: ServerProcess) -> None:
    """A chunked upload with no Content-Length: the server answers 413 (or drops the
    connection) once the body passes the limit, without waiting for the rest; nothing is
    stored and the server keeps serving."""
    limit = body_limit(Settings())
    total = 20 * limit
    piece = _chunk(b" " * 65536)
    sent = 0
    answer = b""
    with socket.create_connection(("127.0.0.1", live_server.port), timeout=30) as sock:
        sock.sendall(
            b"POST /api/v1/memory/set HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + _chunk(b'{"key": "streamed", "data": "')
        )
        deadline = time.monotonic() + 120
        try:
            while sent < total and time.monotonic() < deadline:
                readable, writable, _ = select.select([sock], [sock], [], 5)
                if readable:
                    break
                if writable:
                    sent += sock.send(piece)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and b"\r\n\r\n" not in answer:
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
        except (ConnectionResetError, BrokenPipeError):
            pass
    assert sent < total / 2, "the server read the whole oversized body"
    if answer:
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    with httpx.Client(base_url=live_server.url, timeout=30) as http:
        assert_error(http.post(f"{API}/get", json={"key": "streamed"}), 404, "not_found")
        assert http.get("/api/v1/health").status_code == 200


def test_data_survives_a_restart(database_url: str) -> None:
    records = {f"key-{i}": {"i": i, "text": "ü" * i} for i in range(20)}
    first = ServerProcess(["--database-url", database_url]).start()
    try:
        with httpx.Client(base_url=first.url, timeout=30) as http:
            for key, value in records.items():
                assert http.post(f"{API}/set", json={"key": key, "data": value}).status_code == 200
            h = headers_for("session")
            assert (
                http.post(f"{API}/set", json={"key": "s", "data": 1}, headers=h).status_code == 200
            )
            assert http.post(f"{API}/delete", json={"key": "key-0"}).status_code == 204
            before = http.post(f"{API}/get", json={"key": "key-1"}).json()
    finally:
        assert first.stop() == 0
    second = ServerProcess(["--database-url", database_url]).start()
    try:
        with httpx.Client(base_url=second.url, timeout=30) as http:
            assert_error(http.post(f"{API}/get", json={"key": "key-0"}), 404, "not_found")
            for key, value in list(records.items())[1:]:
                assert http.post(f"{API}/get", json={"key": key}).json()["data"] == value
            assert http.post(f"{API}/get", json={"key": "key-1"}).json() == before
            listed = http.get(f"{API}/list", params={"scope": "session"}, headers=h).json()
            assert [(i["key"], i["data"]) for i in listed] == [("s", 1)]
    finally:
        assert second.stop() == 0


def test_acknowledged_writes_survive_a_crash(database_url: str) -> None:
    """SIGKILL, no shutdown at all: every write answered 200 is there after restart."""
    first = ServerProcess(["--database-url", database_url]).start()
    try:
        with httpx.Client(base_url=first.url, timeout=30) as http:
            for i in range(50):
                assert http.post(f"{API}/set", json={"key": f"c{i}", "data": i}).status_code == 200
    finally:
        first.kill()
    second = ServerProcess(["--database-url", database_url]).start()
    try:
        with httpx.Client(base_url=second.url, timeout=30) as http:
            listed = http.get(f"{API}/list", params={"scope": "global"}).json()
            assert sorted(i["data"] for i in listed) == list(range(50))
    finally:
        second.stop()
