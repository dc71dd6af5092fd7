"""The client configuration blocks of docs/mcp.md work as a client would use them: the
stdio one launches its command, the HTTP one connects with its URL and headers."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentfield_asgi.testing import ServerProcess

from .support import http_session, ok, stdio_session

PAGE = Path(__file__).resolve().parents[2] / "docs" / "mcp.md"
DOC_URL = "http://127.0.0.1:8080"


def config_blocks() -> list[dict[str, Any]]:
    blocks = re.findall(r"```json\n(.*?)```", PAGE.read_text(), re.DOTALL)
    return [json.loads(b)["mcpServers"]["agentfield-memory"] for b in blocks]


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    db = tmp_path_factory.mktemp("mcp-docs") / "memory.db"
    server = ServerProcess(["--database-url", f"sqlite:///{db}", "--mcp", "--api-key", "demo-key"])
    yield server.start()
    server.stop()


def test_the_page_has_one_stdio_and_one_http_configuration() -> None:
    kinds = [("command" in c, c.get("type")) for c in config_blocks()]
    assert kinds == [(True, None), (False, "http")]


async def test_the_stdio_configuration_runs(keyed_server: ServerProcess) -> None:
    config = config_blocks()[0]
    assert config["command"] == "agentfield-asgi"  # our console script
    args = [a.replace(DOC_URL, keyed_server.url) for a in config["args"]]
    env = {**config["env"], "AGENTFIELD_API_KEY": "demo-key"}  # what a user fills in
    async with stdio_session(args[1:], env=env) as s:  # support.stdio_session adds "mcp"
        assert args[0] == "mcp"
        stored = await ok(s, "memory_set", key="from-config", value=1)
        assert (stored["scope"], stored["scope_id"]) == ("session", "my-desk")


async def test_the_http_configuration_connects(keyed_server: ServerProcess) -> None:
    config = config_blocks()[1]
    url = config["url"].replace(DOC_URL, keyed_server.url)
    async with http_session(url, config["headers"]) as s:
        stored = await ok(s, "memory_set", key="from-http-config", value=2)
        assert (stored["scope"], stored["scope_id"]) == ("session", "my-desk")
