"""API keys on MCP as on REST: over HTTP no key, no session; stdio ``--url`` sends
``AGENTFIELD_API_KEY`` to the service."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agentfield_asgi.testing import ServerProcess

from .support import INITIALIZE, fails, http_session, ok, stdio_session

KEY = "mcp-test-key"


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    db = tmp_path_factory.mktemp("mcp-auth") / "memory.db"
    server = ServerProcess(["--database-url", f"sqlite:///{db}", "--mcp", "--api-key", KEY])
    yield server.start()
    server.stop()


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}])
def test_http_without_a_valid_key_gets_no_session(
    keyed_server: ServerProcess, headers: dict[str, str]
) -> None:
    reply = httpx.post(
        keyed_server.url + "/mcp",
        json=INITIALIZE,
        headers={**headers, "Accept": "application/json, text/event-stream"},
    )
    assert reply.status_code == 401
    assert reply.json()["code"] == "unauthorized"
    assert "mcp-session-id" not in reply.headers


async def test_the_sdk_client_without_a_key_cannot_start(keyed_server: ServerProcess) -> None:
    with pytest.raises(Exception) as refused:
        async with http_session(keyed_server.url + "/mcp") as s:
            await s.list_tools()
    assert "401" in repr(refused.value) or "Unauthorized" in repr(refused.value)


@pytest.mark.parametrize("header", ["X-API-Key", "Authorization"])
async def test_http_with_the_key_works(keyed_server: ServerProcess, header: str) -> None:
    value = KEY if header == "X-API-Key" else f"Bearer {KEY}"
    async with http_session(keyed_server.url + "/mcp", {header: value}) as s:
        stored = await ok(s, "memory_set", key=f"k-{header}", value=1, scope="global")
        assert stored["version"] == 1


async def test_stdio_url_sends_the_api_key(keyed_server: ServerProcess, tmp_path: Path) -> None:
    args = ["--url", keyed_server.url]
    async with stdio_session(args, env={"AGENTFIELD_API_KEY": KEY}) as s:
        assert (await ok(s, "memory_increment", key="stdio-keyed", scope="global"))["data"] == 1
    async with stdio_session(args, env={"AGENTFIELD_API_KEY": "wrong"}) as s:
        await fails(s, "memory_get", "unauthorized", key="stdio-keyed", scope="global")
