"""The memory app mounted inside a host Starlette app under ``/agentfield``: with the host
composing ``memory.lifespan``, and without (lazy start on the first request, exactly once
however many arrive together); other ASGI scopes; and the same over a live uvicorn."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from memory_api_support import assert_error, headers_for
from mount_host import build_host, count_opens

from agentfield_asgi import create_memory_app
from agentfield_asgi.testing import ServerProcess

PREFIX = "/agentfield/api/v1/memory"
HERE = Path(__file__).parent


def client_for(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://host")


async def exercise_mounted_routes(http: httpx.AsyncClient) -> None:
    """set/get/list/delete under the prefix, and our error body for the prefix's 404/405."""
    h = headers_for("session")
    r = await http.post(f"{PREFIX}/set", json={"key": "k", "data": [1]}, headers=h)
    assert r.status_code == 200 and r.json()["scope"] == "session"
    assert (await http.post(f"{PREFIX}/get", json={"key": "k"}, headers=h)).json()["data"] == [1]
    listed = await http.get(f"{PREFIX}/list", params={"scope": "session"}, headers=h)
    assert [i["key"] for i in listed.json()] == ["k"]
    assert (await http.post(f"{PREFIX}/delete", json={"key": "k"}, headers=h)).status_code == 204
    assert_error(await http.post(f"{PREFIX}/get", json={"key": "k"}, headers=h), 404, "not_found")
    assert_error(await http.get("/agentfield/api/v1/nope"), 404, "not_found")
    assert_error(await http.get(f"{PREFIX}/set"), 405, "method_not_allowed")
    # The host's own routes are untouched, and the memory routes exist only under the prefix.
    assert (await http.get("/hello")).json()["host"] == "ok"
    assert (await http.post("/api/v1/memory/get", json={"key": "k"})).status_code == 404


async def test_mounted_with_the_host_composing_the_lifespan(database_url: str) -> None:
    memory = create_memory_app(database_url)
    host = build_host(memory, compose_lifespan=True)
    async with host.router.lifespan_context(host):
        assert memory.started
        async with client_for(host) as http:
            assert (await http.get("/hello")).json() == {
                "host": "ok",
                "memory_started": True,
                "opens": 1,
            }
            await exercise_mounted_routes(http)
    assert not memory.started


async def test_mounted_without_lifespan_starts_on_first_request(database_url: str) -> None:
    memory = create_memory_app(database_url)
    host = build_host(memory, compose_lifespan=False)
    try:
        async with client_for(host) as http:
            assert (await http.get("/hello")).json()["memory_started"] is False
            await exercise_mounted_routes(http)
            assert (await http.get("/hello")).json() == {
                "host": "ok",
                "memory_started": True,
                "opens": 1,
            }
    finally:
        await memory.stop()


async def test_concurrent_first_requests_start_the_service_once(database_url: str) -> None:
    memory = create_memory_app(database_url)
    host = build_host(memory, compose_lifespan=False)
    started: list[int] = []
    memory.on_start(lambda: started.append(1))
    try:
        async with client_for(host) as http:
            requests = asyncio.gather(
                *(
                    http.post(f"{PREFIX}/set", json={"key": f"k{i}", "data": i, "scope": "global"})
                    for i in range(40)
                ),
                *(http.post(f"{PREFIX}/get", json={"key": "absent"}) for _ in range(10)),
            )
            responses = await asyncio.wait_for(requests, 120)  # fail, not hang, if start breaks
            assert [r.status_code for r in responses] == [200] * 40 + [404] * 10
            assert (await http.get("/hello")).json()["opens"] == 1
            assert started == [1]
            listed = await http.get(f"{PREFIX}/list", params={"scope": "global"})
            assert sorted(i["data"] for i in listed.json()) == list(range(40))
    finally:
        await asyncio.wait_for(memory.stop(), 120)


async def test_standalone_app_starts_lazily_without_a_lifespan(database_url: str) -> None:
    """Served by a server that sends no lifespan events, the app itself starts on demand."""
    memory = create_memory_app(database_url)
    opened = count_opens(memory)
    try:
        async with client_for(memory.app) as http:
            r = await http.post("/api/v1/memory/set", json={"key": "k", "data": 1})
            assert r.status_code == 200
            assert opened == [1] and memory.started
    finally:
        await memory.stop()


async def test_standalone_lifespan_passes_through(database_url: str) -> None:
    memory = create_memory_app(database_url)
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    task = asyncio.create_task(
        memory.app({"type": "lifespan", "asgi": {"version": "3.0"}}, inbox.get, outbox.put)
    )
    await inbox.put({"type": "lifespan.startup"})
    assert await asyncio.wait_for(outbox.get(), 60) == {"type": "lifespan.startup.complete"}
    assert memory.started
    await inbox.put({"type": "lifespan.shutdown"})
    assert await asyncio.wait_for(outbox.get(), 60) == {"type": "lifespan.shutdown.complete"}
    await asyncio.wait_for(task, 60)
    assert not memory.started


async def websocket_call(app: Any, path: str) -> list[dict[str, Any]]:
    """Open a WebSocket to ``app`` at ``path``; returns what the app sent before closing."""
    sent: list[dict[str, Any]] = []
    messages = [{"type": "websocket.connect"}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await asyncio.sleep(3600)
        return {"type": "websocket.disconnect", "code": 1000}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "ws",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "subprotocols": [],
    }
    await asyncio.wait_for(app(scope, receive, send), 60)
    return sent


async def test_websocket_scope_starts_the_service_and_passes_through(database_url: str) -> None:
    memory = create_memory_app(database_url)
    host = build_host(memory, compose_lifespan=False)
    try:
        sent = await websocket_call(host, "/agentfield/api/v1/no-such-socket")
        # The service started, and the memory app (not the host) answered: no such route.
        assert memory.started
        assert [m["type"] for m in sent] == ["websocket.close"]
    finally:
        await memory.stop()


async def test_storage_that_cannot_open_answers_503(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    memory = create_memory_app(f"sqlite:///{blocker}/memory.db")
    host = build_host(memory, compose_lifespan=False)
    async with client_for(host) as http:
        for _ in range(2):  # every request retries the start, and fails cleanly
            r = await http.post(f"{PREFIX}/get", json={"key": "k"})
            assert_error(r, 503, "storage_unavailable")
        assert (await http.get("/hello")).json()["memory_started"] is False
    sent = await websocket_call(host, "/agentfield/api/v1/no-such-socket")
    assert sent == [{"type": "websocket.close", "code": 1011, "reason": sent[0]["reason"]}]
    assert not memory.started


@pytest.mark.parametrize("compose_lifespan", [True, False], ids=["host-lifespan", "lazy"])
def test_mounted_over_live_uvicorn(database_url: str, compose_lifespan: bool) -> None:
    server = ServerProcess(
        app="mount_host:app",
        cwd=str(HERE),
        env={
            "AGENTFIELD_DATABASE_URL": database_url,
            "MOUNT_HOST_LIFESPAN": "1" if compose_lifespan else "0",
        },
        ready_path="/hello",
    ).start()
    try:
        hello = httpx.get(server.url + "/hello", timeout=30).json()
        assert hello == {
            "host": "ok",
            "memory_started": compose_lifespan,
            "opens": 1 if compose_lifespan else 0,
        }

        async def run() -> None:
            limits = httpx.Limits(max_connections=40)
            async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as http:
                # Many first requests at once: the service starts exactly once.
                responses = await asyncio.gather(
                    *(
                        http.post(f"{PREFIX}/set", json={"key": f"c{i}", "data": i})
                        for i in range(40)
                    )
                )
                assert [r.status_code for r in responses] == [200] * 40
                assert (await http.get("/hello")).json()["opens"] == 1
                await exercise_mounted_routes(http)

        asyncio.run(run())
    finally:
        server.stop()
