"""``/mcp`` is served only when enabled: ``serve --mcp`` (tested throughout) or the
``AGENTFIELD_MCP`` setting."""

from __future__ import annotations

from pathlib import Path

import httpx

from agentfield_asgi.testing import ServerProcess

from .support import http_session, ok


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
