"""Fixtures for the MCP tests: a live memory service serving ``/mcp`` (SQLite), and MCP
sessions on it over Streamable HTTP, over stdio (``--url``) and over stdio opening a
database of its own (``--database-url``)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from mcp import ClientSession

from agentfield_asgi.testing import ServerProcess

from .support import Notifications, http_session, stdio_session

SessionFactory = Callable[..., contextlib.AbstractAsyncContextManager[ClientSession]]
KINDS = ["http", "stdio-url", "stdio-db"]


@pytest.fixture(scope="module")
def mcp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """``agentfield-asgi serve --mcp`` on SQLite, shared by a module's tests."""
    db = tmp_path_factory.mktemp("mcp") / "memory.db"
    server = ServerProcess(["--database-url", f"sqlite:///{db}", "--mcp"]).start()
    yield server
    server.stop()


@pytest.fixture
def unique() -> str:
    """A fresh id, so tests sharing a server never see each other's keys."""
    return uuid.uuid4().hex[:12]


def session_factory(kind: str, server: ServerProcess, tmp_path: Path) -> SessionFactory:
    """Opens MCP sessions of ``kind``; ``session_id`` is the default session id (the
    ``X-Session-ID`` header over HTTP, ``--session-id`` on stdio)."""

    def open_session(
        session_id: str | None = None, notifications: Notifications | None = None
    ) -> contextlib.AbstractAsyncContextManager[ClientSession]:
        if kind == "http":
            headers = {"X-Session-ID": session_id} if session_id else {}
            return http_session(server.url + "/mcp", headers, notifications)
        args: list[str] = ["--session-id", session_id] if session_id else []
        if kind == "stdio-url":
            args += ["--url", server.url]
        else:
            args += ["--database-url", f"sqlite:///{tmp_path / 'own.db'}"]
        return stdio_session(args, notifications=notifications)

    return open_session


@pytest.fixture(params=KINDS)
def open_session(
    request: pytest.FixtureRequest, mcp_server: ServerProcess, tmp_path: Path
) -> SessionFactory:
    return session_factory(request.param, mcp_server, tmp_path)
