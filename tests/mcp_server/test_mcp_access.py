"""Per-key access control reaches MCP: a key from ``--api-keys-file`` gets through
``/mcp`` (tools, resources, subscriptions) exactly the refusals it gets from REST, the
grants of the key that opened the session apply to every request of it (and a SIGHUP
reload takes effect at once), and stdio ``--url`` is refused by the service it talks to."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp.shared.exceptions import McpError
from pydantic import AnyUrl

from agentfield_asgi.context import SCOPE_HEADERS
from agentfield_asgi.integrations.mcp import resource_uri
from agentfield_asgi.testing import ServerProcess
from agentfield_asgi.testing.waits import wait_until

from .support import INITIALIZE, Notifications, fails, http_session, ok, stdio_session

A, T, OPS, PLAIN = "k-agent-a", "k-tenant-1", "k-ops", "k-plain"
KEYS = {
    "keys": [
        {"key": A, "read": ["actor:agent-a", "global:*"], "write": ["actor:agent-a"]},
        {"key": T, "read": ["session:tenant1-*"], "write": ["session:tenant1-*"]},
        {"key": OPS, "read": ["*"], "write": ["*"], "admin": True},
    ]
}
M = "/api/v1/memory"
ACCEPT = {"Accept": "application/json, text/event-stream"}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """``serve --mcp`` with the keys file and a plain key (full access) beside it: the
    plain key must not leak into what a restricted MCP session may do."""
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps(KEYS))
    db = f"sqlite:///{tmp_path / 'm.db'}"
    args = ["--database-url", db, "--mcp", "--api-keys-file", str(keys), "--api-key", PLAIN]
    with ServerProcess(args) as srv:
        srv.keys_path = keys  # type: ignore[attr-defined]
        yield srv


def rest(url: str, path: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    """A REST call with the admin key; the decoded body (None for 204)."""
    sent = {**(headers or {}), "X-API-Key": OPS}
    reply = httpx.post(url + M + path, json=body, headers=sent, timeout=30)
    assert reply.status_code in (200, 204, 404), reply.text
    return reply.json() if reply.status_code != 204 else None


def put(url: str, scope: str, scope_id: str, data: Any, key: str = "shadow") -> None:
    """Write ``key`` in ``scope:scope_id`` over REST with the admin key."""
    headers = {SCOPE_HEADERS[scope]: scope_id} if scope in SCOPE_HEADERS else {}
    rest(url, "/set", {"key": key, "data": data, "scope": scope}, headers)


def seed(url: str) -> None:
    for scope, sid in (("actor", "agent-a"), ("actor", "agent-b"), ("session", "tenant1-x")):
        put(url, scope, sid, f"{scope}-{sid}")
    put(url, "global", "global", "global")


def mcp_url(server: ServerProcess) -> str:
    return server.url + "/mcp"


def key_header(key: str, **ids: str) -> dict[str, str]:
    return {"X-API-Key": key, **ids}


async def test_tools_get_the_same_refusals_as_rest(server: ServerProcess) -> None:
    seed(server.url)
    other = {"scope": "actor", "scope_id": "agent-b"}
    session = {"scope": "session", "scope_id": "tenant1-x"}
    async with http_session(mcp_url(server), key_header(A, **{"X-Actor-ID": "agent-a"})) as s:
        # Allowed: its own actor memory (explicit and unscoped), reads of global.
        assert (await ok(s, "memory_set", key="mine", value=1, scope="actor"))["version"] == 1
        assert (await ok(s, "memory_increment", key="count"))["data"] == 1
        assert (await ok(s, "memory_get", key="shadow", scope="global"))["data"] == "global"
        unscoped = await ok(s, "memory_get", key="shadow")  # actor first, then global
        assert unscoped["data"] == "actor-agent-a"
        assert "mine" in (await ok(s, "memory_list_keys", scope="actor"))["keys"]
        await ok(s, "memory_set_vector", key="v", embedding=[1.0, 0.0], scope="actor")
        # Refused, whichever route the tool takes (direct store calls or the ASGI app).
        refused = [
            ("memory_set", {"key": "x", "value": 1, **other}),
            ("memory_set", {"key": "x", "value": 1, "scope": "global"}),  # read-only there
            ("memory_get", {"key": "shadow", **other}),
            ("memory_exists", {"key": "shadow", **session}),
            ("memory_delete", {"key": "shadow", **other}),
            ("memory_list_keys", session),
            ("memory_increment", {"key": "x", **other}),
            ("memory_compare_and_set", {"key": "x", "value": 1, "expected_version": 0, **other}),
            ("memory_history", other),
            ("memory_set_vector", {"key": "v", "embedding": [1.0, 0.0], **session}),
            ("memory_similarity_search", {"query_embedding": [1.0, 0.0], **other}),
        ]
        for tool, args in refused:
            body = await fails(s, tool, "forbidden", **args)
            assert body["details"]["action"] in ("read", "write"), (tool, body)
    # Nothing was written where the key was refused.
    assert (
        rest(server.url, "/get", {"key": "x", "scope": "actor"}, {"X-Actor-ID": "agent-b"})["code"]
        == "not_found"
    )
    b = rest(server.url, "/get", {"key": "shadow", "scope": "actor"}, {"X-Actor-ID": "agent-b"})
    assert b["data"] == "actor-agent-b" and b["version"] == 1
    assert rest(server.url, "/get", {"key": "x", "scope": "global"})["code"] == "not_found"


async def test_history_tool_leaves_out_unreadable_events(server: ServerProcess) -> None:
    seed(server.url)
    async with http_session(mcp_url(server), key_header(A)) as s:
        events = (await ok(s, "memory_history", limit=1000))["events"]
    assert {(e["scope"], e["scope_id"]) for e in events} == {
        ("actor", "agent-a"),
        ("global", "global"),
    }


async def test_resources_read_and_list_only_what_the_key_may_read(server: ServerProcess) -> None:
    seed(server.url)
    ids = {"X-Actor-ID": "agent-a", "X-Session-ID": "tenant1-x"}
    async with http_session(mcp_url(server), key_header(A, **ids)) as s:
        listed = {str(r.uri) for r in (await s.list_resources()).resources}
        assert listed == {
            resource_uri("actor", "agent-a", "shadow"),
            resource_uri("global", "global", "shadow"),
        }
        read = await s.read_resource(AnyUrl(resource_uri("actor", "agent-a", "shadow")))
        assert json.loads(read.contents[0].text)["data"] == "actor-agent-a"  # type: ignore[union-attr]
        for uri in (
            resource_uri("actor", "agent-b", "shadow"),
            resource_uri("session", "tenant1-x", "shadow"),
        ):
            with pytest.raises(McpError) as refused:
                await s.read_resource(AnyUrl(uri))
            assert refused.value.error.data["code"] == "forbidden"
    # tenant-1 reads its session and nothing else.
    async with http_session(mcp_url(server), key_header(T, **ids)) as s:
        listed = {str(r.uri) for r in (await s.list_resources()).resources}
        assert listed == {resource_uri("session", "tenant1-x", "shadow")}


async def test_subscriptions_notify_only_readable_changes(server: ServerProcess) -> None:
    seed(server.url)
    mine = resource_uri("actor", "agent-a", "shadow")
    notes = Notifications()
    async with http_session(mcp_url(server), key_header(A), notes) as s:
        with pytest.raises(McpError) as refused:
            await s.subscribe_resource(AnyUrl(resource_uri("actor", "agent-b", "shadow")))
        assert refused.value.error.data["code"] == "forbidden"
        await s.subscribe_resource(AnyUrl(mine))
        await s.subscribe_resource(AnyUrl(resource_uri("global", "global", "shadow")))
        put(server.url, "actor", "agent-b", 2)  # watched by nobody: refused above
        put(server.url, "actor", "agent-a", 2)
        assert await notes.wait_for(1) == [mine]

        # The keys file now lets agent-a read global memory only: its subscription to its
        # actor key goes quiet at once (a leak would arrive first), the global one goes on.
        changed = json.loads(json.dumps(KEYS))
        changed["keys"][0]["read"] = ["global:*"]
        await reload_keys(server, changed, 403)
        put(server.url, "actor", "agent-a", 3)
        put(server.url, "global", "global", 3)
        assert await notes.wait_for(2) == [mine, resource_uri("global", "global", "shadow")]
        # And the session's next tool call has the new grants.
        await fails(s, "memory_get", "forbidden", key="shadow", scope="actor", scope_id="agent-a")


async def reload_keys(server: ServerProcess, keys: dict[str, Any], status: int) -> None:
    """Rewrite the keys file, SIGHUP the server and wait until agent-a's REST read of its
    actor memory answers ``status`` (the new file is in force)."""
    path: Path = server.keys_path  # type: ignore[attr-defined]
    await asyncio.to_thread(path.write_text, json.dumps(keys))
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGHUP)

    async def answers() -> bool:
        body = {"key": "shadow", "scope": "actor"}
        headers = {"X-API-Key": A, "X-Actor-ID": "agent-a"}
        async with httpx.AsyncClient() as client:
            reply = await client.post(server.url + M + "/get", json=body, headers=headers)
        return reply.status_code == status

    await wait_until(answers, "the reloaded keys file did not take effect")


async def test_a_removed_key_stops_working_in_an_open_session(server: ServerProcess) -> None:
    with pytest.raises(BaseException) as refused:
        async with http_session(mcp_url(server), key_header(A)) as s:
            await ok(s, "memory_get", key="absent", default=0, scope="global")
            changed = json.loads(json.dumps(KEYS))
            del changed["keys"][0]
            await reload_keys(server, changed, 401)
            await s.call_tool("memory_get", {"key": "absent", "scope": "global"})
    assert any("401 Unauthorized" in str(e) for e in leaves(refused.value)), refused.value


def leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in leaves(sub)]
    return [exc]


def raw(
    server: ServerProcess, key: str, message: dict[str, Any], session: str | None = None
) -> httpx.Response:
    headers = {**ACCEPT, "X-API-Key": key, "MCP-Protocol-Version": "2025-06-18"}
    if session is not None:
        headers["mcp-session-id"] = session
    return httpx.post(mcp_url(server), json=message, headers=headers, timeout=30)


def test_a_session_answers_only_the_key_that_opened_it(server: ServerProcess) -> None:
    opened = raw(server, A, INITIALIZE)
    assert opened.status_code == 200, opened.text
    sid = opened.headers["mcp-session-id"]
    assert (
        raw(server, A, {"jsonrpc": "2.0", "method": "notifications/initialized"}, sid).status_code
        == 202
    )
    call = {
        "jsonrpc": "2.0",
        "id": 2,
        "method": "tools/call",
        "params": {
            "name": "memory_get",
            "arguments": {"key": "k", "default": 0, "scope": "global"},
        },
    }
    # Another valid key (even the full-access one) cannot ride on agent-a's session.
    for other in (T, PLAIN):
        stolen = raw(server, other, call, sid)
        assert stolen.status_code == 403, stolen.text
        assert stolen.json()["code"] == "forbidden"
    mine = raw(server, A, call, sid)
    assert mine.status_code == 200 and mine.json()["result"]["isError"] is False
    # Nor end it; its own key can.
    end = {"X-API-Key": T, "mcp-session-id": sid, "MCP-Protocol-Version": "2025-06-18"}
    assert httpx.delete(mcp_url(server), headers=end).status_code == 403
    assert raw(server, A, call, sid).status_code == 200
    end["X-API-Key"] = A
    assert httpx.delete(mcp_url(server), headers=end).status_code == 200
    assert raw(server, A, call, sid).status_code == 404  # the session is gone


async def test_stdio_url_with_a_restricted_key_is_refused(server: ServerProcess) -> None:
    seed(server.url)
    args = ["--url", server.url, "--actor-id", "agent-a", "--session-id", "tenant1-x"]
    async with stdio_session(args, env={"AGENTFIELD_API_KEY": A}) as s:
        # session before actor in the hierarchy: the unreadable session is skipped
        assert (await ok(s, "memory_get", key="shadow"))["data"] == "actor-agent-a"
        listed = {str(r.uri) for r in (await s.list_resources()).resources}
        assert listed == {
            resource_uri("actor", "agent-a", "shadow"),
            resource_uri("global", "global", "shadow"),
        }
        await fails(s, "memory_set", "forbidden", key="x", value=1, scope="global")
        await fails(s, "memory_increment", "forbidden", key="x", scope="actor", scope_id="b")
        with pytest.raises(McpError) as refused:
            await s.read_resource(AnyUrl(resource_uri("actor", "agent-b", "shadow")))
        assert refused.value.error.data["code"] == "forbidden"
        # The service refuses the change stream: the subscription is refused as such.
        with pytest.raises(McpError) as unwatched:
            await s.subscribe_resource(AnyUrl(resource_uri("actor", "agent-b", "shadow")))
        assert unwatched.value.error.data["code"] == "forbidden"


async def test_a_keys_file_alone_serves_every_tool(tmp_path: Path) -> None:
    """Without a plain key, tools that go through the service's routes (increment, history,
    vectors) run with the session key's grants too (they used to find no key to send)."""
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps(KEYS))
    args = ["--database-url", f"sqlite:///{tmp_path / 'm.db'}", "--mcp", "--api-keys-file"]
    with ServerProcess([*args, str(keys)]) as srv:
        async with http_session(mcp_url(srv), key_header(A, **{"X-Actor-ID": "agent-a"})) as s:
            assert (await ok(s, "memory_increment", key="n", by=2))["data"] == 2
            await ok(s, "memory_set_vector", key="v", embedding=[1.0, 0.0])
            found = await ok(s, "memory_similarity_search", query_embedding=[1.0, 0.0])
            assert [r["key"] for r in found["results"]] == ["v"]
            events = (await ok(s, "memory_history", scope="actor"))["events"]
            assert [e["key"] for e in events] == ["n", "v"]  # the vector's event too
            await fails(s, "memory_increment", "forbidden", key="n", scope="global")
