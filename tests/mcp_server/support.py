"""MCP sessions for the tests, opened with the ``mcp`` SDK's own client against real
processes: ``agentfield-asgi mcp`` on stdio, ``agentfield-asgi serve --mcp`` over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import mcp.types as types
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

MCP_COMMAND = [sys.executable, "-m", "agentfield_asgi", "mcp"]
# A raw initialize request, for tests that speak to /mcp below the SDK client.
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "0"},
    },
}


class Notifications:
    """``notifications/resources/updated`` a session received, as URIs, in order."""

    def __init__(self) -> None:
        self.uris: list[str] = []
        self._changed = asyncio.Condition()

    async def __call__(self, message: Any) -> None:
        if isinstance(message, types.ServerNotification) and isinstance(
            message.root, types.ResourceUpdatedNotification
        ):
            async with self._changed:
                self.uris.append(str(message.root.params.uri))
                self._changed.notify_all()

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[str]:  # noqa: ASYNC109
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.uris) >= count)
        return list(self.uris)


@contextlib.asynccontextmanager
async def stdio_session(
    args: Sequence[str],
    env: dict[str, str] | None = None,
    notifications: Notifications | None = None,
) -> AsyncIterator[ClientSession]:
    """``agentfield-asgi mcp ARGS`` as a child process, initialized."""
    params = StdioServerParameters(
        command=MCP_COMMAND[0], args=[*MCP_COMMAND[1:], *args], env={**os.environ, **(env or {})}
    )
    async with (
        stdio_client(params) as (read, write),
        ClientSession(read, write, message_handler=notifications) as session,
    ):
        await session.initialize()
        yield session


@contextlib.asynccontextmanager
async def http_session(
    url: str, headers: dict[str, str] | None = None, notifications: Notifications | None = None
) -> AsyncIterator[ClientSession]:
    """A Streamable HTTP session on ``url`` (the server's ``/mcp``), initialized."""
    client = httpx.AsyncClient(headers=headers or {}, timeout=httpx.Timeout(30.0, read=300.0))
    async with (
        client,
        streamable_http_client(url, http_client=client) as (read, write, _),
        ClientSession(read, write, message_handler=notifications) as session,
    ):
        await session.initialize()
        yield session


async def call(session: ClientSession, tool: str, **args: Any) -> tuple[bool, dict[str, Any]]:
    """``(is_error, result)``; checks the JSON text and the structured content agree."""
    result = await session.call_tool(tool, args)
    assert result.content and isinstance(result.content[0], types.TextContent)
    body = json.loads(result.content[0].text)
    assert body == result.structuredContent
    return bool(result.isError), body


async def ok(session: ClientSession, tool: str, **args: Any) -> dict[str, Any]:
    is_error, body = await call(session, tool, **args)
    assert not is_error, body
    return body


async def fails(session: ClientSession, tool: str, code: str, **args: Any) -> dict[str, Any]:
    """The tool answers an ``isError`` result with the protocol's error body and ``code``."""
    is_error, body = await call(session, tool, **args)
    assert is_error, body
    assert set(body) == {"error", "code", "details"} and body["code"] == code, body
    assert isinstance(body["error"], str) and body["error"]
    return body
