"""What the SDK puts on the wire: paths, bodies, headers, timeouts, and failures."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from agentfield_asgi import ExecutionContext, MemoryAccessError, MemoryClient
from agentfield_asgi.client import HTTPTransport
from agentfield_asgi.context import reset_current_context, set_current_context
from agentfield_asgi.testing import free_port

RECORD = {"scope": "global", "scope_id": "global", "key": "k", "data": 1}


class Recorder:
    def __init__(self, reply: Callable[[httpx.Request], httpx.Response] | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.reply = reply or (lambda request: httpx.Response(200, json=RECORD))

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.reply(request)

    def client(self, **options: object) -> MemoryClient:
        transport = HTTPTransport("http://cp", transport=httpx.MockTransport(self), **options)  # type: ignore[arg-type]
        return MemoryClient(transport=transport, agent_node_id="node-a")

    def body(self, i: int = -1) -> dict:
        return json.loads(self.requests[i].content)


async def test_unscoped_calls_send_the_context_and_no_scope() -> None:
    rec = Recorder()
    memory = rec.client()
    token = set_current_context(
        ExecutionContext(workflow_id="wf-1", session_id="s-1", execution_id="exec-1")
    )
    try:
        await memory.set("k", {"v": 1})
    finally:
        reset_current_context(token)
    request = rec.requests[0]
    assert (request.method, request.url.path) == ("POST", "/api/v1/memory/set")
    assert rec.body() == {"key": "k", "data": {"v": 1}}
    assert request.headers["X-Workflow-ID"] == "wf-1"
    assert request.headers["X-Session-ID"] == "s-1"
    assert request.headers["X-Execution-ID"] == "exec-1"
    assert request.headers["X-Agent-Node-ID"] == "node-a"
    assert request.headers["Content-Type"] == "application/json"


@pytest.mark.parametrize(
    ("view", "scope", "header", "scope_id"),
    [
        (lambda m: m.session("user-1"), "session", "X-Session-ID", "user-1"),
        (lambda m: m.actor("actor-1"), "actor", "X-Actor-ID", "actor-1"),
        (lambda m: m.workflow("wf-x"), "workflow", "X-Workflow-ID", "wf-x"),
        (lambda m: m.global_scope, "global", None, "global"),
    ],
)
async def test_scoped_calls_send_scope_in_body_and_id_in_header(
    view, scope, header, scope_id
) -> None:  # type: ignore[no-untyped-def]
    rec = Recorder()
    scoped = view(rec.client())
    token = set_current_context(
        ExecutionContext(workflow_id="wf-ctx", session_id="s-ctx", actor_id="a-ctx")
    )
    try:
        await scoped.set("k", 1)
        await scoped.get("k")
        await scoped.delete("k")
    finally:
        reset_current_context(token)
    paths = [r.url.path for r in rec.requests]
    assert paths == ["/api/v1/memory/set", "/api/v1/memory/get", "/api/v1/memory/delete"]
    assert rec.body(0) == {"key": "k", "data": 1, "scope": scope}
    assert rec.body(1) == {"key": "k", "scope": scope}
    for request in rec.requests:
        if header:
            assert request.headers[header] == scope_id


async def test_list_keys_is_a_get_with_scope_query() -> None:
    rec = Recorder(lambda r: httpx.Response(200, json=[{"key": "a"}, {"key": "b"}]))
    keys = await rec.client().session("s-1").list_keys()
    request = rec.requests[0]
    assert (request.method, request.url.path, request.url.params["scope"]) == (
        "GET",
        "/api/v1/memory/list",
        "session",
    )
    assert request.headers["X-Session-ID"] == "s-1"
    assert keys == ["a", "b"]


async def test_get_miss_is_the_default_and_errors_are_typed() -> None:
    def reply(request: httpx.Request) -> httpx.Response:
        if json.loads(request.content)["key"] == "missing":
            return httpx.Response(
                404, json={"error": "not found", "code": "not_found", "details": {"key": "missing"}}
            )
        return httpx.Response(
            503, json={"error": "db down", "code": "storage_unavailable", "details": {}}
        )

    memory = Recorder(reply).client()
    assert await memory.get("missing", default=7) == 7
    assert await memory.exists("missing") is False
    with pytest.raises(MemoryAccessError) as info:
        await memory.get("other")
    assert (info.value.status, info.value.code, info.value.message) == (
        503,
        "storage_unavailable",
        "db down",
    )


async def test_api_key_and_timeout_are_sent() -> None:
    rec = Recorder()
    transport = HTTPTransport("http://cp", api_key="secret", transport=httpx.MockTransport(rec))
    memory = MemoryClient(transport=transport, timeout=2.5)
    await memory.global_scope.get("k")
    request = rec.requests[0]
    assert request.headers["X-API-Key"] == "secret"
    assert request.extensions["timeout"]["read"] == 2.5


async def test_timeout_becomes_a_504_memory_access_error() -> None:
    def stall(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("too slow", request=request)

    with pytest.raises(MemoryAccessError) as info:
        await Recorder(stall).client().global_scope.get("k")
    assert (info.value.status, info.value.code) == (504, "timeout")


async def test_unreachable_server_is_a_503_memory_access_error() -> None:
    memory = MemoryClient(f"http://127.0.0.1:{free_port()}", timeout=5.0)
    with pytest.raises(MemoryAccessError) as info:
        await memory.global_scope.set("k", 1)
    assert (info.value.status, info.value.code) == (503, "unreachable")
    await memory.aclose()


async def test_unserialisable_values_fail_before_sending() -> None:
    rec = Recorder()
    with pytest.raises(TypeError):
        await rec.client().global_scope.set("k", object())
    assert rec.requests == []
