"""``/mcp`` is served only when enabled: ``serve --mcp`` (tested throughout) or the
``AGENTFIELD_MCP`` setting."""

from __future__ import annotations

from pathlib import Path

import httpx

from agentfield_asgi.testing import ServerProcess

from .support import http_session, ok, stdio_session


async def test_the_setting_enables_mcp(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'memory.db'}"
    with ServerProcess(["--database-url", db], env={"AGENTFIELD_MCP": "1"}) as server:
        async with http_session(server.url + "/mcp") as s:
            assert (await ok(s, "memory_increment", key="on", scope="global"))["data"] == 1


def test_mcp_is_off_by_default(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'memory.db'}"
    with ServerProcess(["--database-url", db]) as server:
        reply = httpx.post(server.url + "/mcp", json={})
    assert reply.status_code == 404
    assert reply.json()["code"] == "not_found"


async def test_session_per_client_over_http(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'memory.db'}"
    env = {"AGENTFIELD_MCP_SESSION_PER_CLIENT": "1"}
    with ServerProcess(["--database-url", db, "--mcp"], env=env) as server:
        url = server.url + "/mcp"
        async with http_session(url) as a, http_session(url) as b:
            mine = await ok(a, "memory_set", key="note", value="a's")
            theirs = await ok(b, "memory_set", key="note", value="b's")
            assert mine["scope"] == theirs["scope"] == "session"
            assert mine["scope_id"].startswith("mcp-") and theirs["scope_id"].startswith("mcp-")
            assert mine["scope_id"] != theirs["scope_id"]
            assert (await ok(a, "memory_get", key="note"))["data"] == "a's"
            assert (await ok(b, "memory_get", key="note"))["data"] == "b's"
            assert (await ok(a, "memory_get", key="note"))["scope_id"] == mine["scope_id"]
        # A request that names its session keeps it.
        async with http_session(url, {"X-Session-ID": "named"}) as c:
            assert (await ok(c, "memory_set", key="note", value=1))["scope_id"] == "named"


async def test_session_per_client_on_stdio(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'memory.db'}"
    with ServerProcess(["--database-url", db]) as server:
        args = ["--url", server.url, "--session-per-client"]
        async with stdio_session(args) as a, stdio_session(args) as b:
            first = (await ok(a, "memory_set", key="k", value=1))["scope_id"]
            second = (await ok(b, "memory_set", key="k", value=2))["scope_id"]
            assert first.startswith("mcp-") and second.startswith("mcp-") and first != second
            assert (await ok(a, "memory_list_keys"))["scope_id"] == first
        async with stdio_session([*args, "--session-id", "fixed"]) as c:
            assert (await ok(c, "memory_set", key="k", value=3))["scope_id"] == "fixed"
