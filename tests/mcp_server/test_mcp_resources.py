"""Stored keys as MCP resources: list, read, and subscriptions notified by any writer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mcp.shared.exceptions import McpError
from pydantic import AnyUrl

from agentfield_asgi.client import MemoryClient
from agentfield_asgi.integrations.mcp import resource_uri
from agentfield_asgi.testing import ServerProcess

from .conftest import session_factory
from .support import Notifications, ok

REMOTE_KINDS = ["http", "stdio-url"]  # sessions on the live server's store


@pytest.mark.parametrize("kind", REMOTE_KINDS)
async def test_lists_and_reads_keys_as_resources(
    kind: str, mcp_server: ServerProcess, tmp_path: Path, unique: str
) -> None:
    sid = f"s-{unique}"
    async with MemoryClient(mcp_server.url) as rest:
        await rest.session(sid).set("notes/today", {"todo": 3})
        await rest.session(sid).set("odd key*?", "literal")
        await rest.global_scope.set(f"g-{unique}", True)
        await rest.session("someone-else").set(f"private-{unique}", 1)

    async with session_factory(kind, mcp_server, tmp_path)(sid) as s:
        listed = {str(r.uri): r for r in (await s.list_resources()).resources}
        mine = {uri for uri in listed if unique in uri}
        assert mine == {
            resource_uri("session", sid, "notes/today"),
            resource_uri("session", sid, "odd key*?"),
            resource_uri("global", "global", f"g-{unique}"),
        }
        assert listed[resource_uri("session", sid, "notes/today")].mimeType == "application/json"
        templates = (await s.list_resource_templates()).resourceTemplates
        assert [t.uriTemplate for t in templates] == ["agentfield://{scope}/{scope_id}/{key}"]

        for key, value in (("notes/today", {"todo": 3}), ("odd key*?", "literal")):
            read = await s.read_resource(AnyUrl(resource_uri("session", sid, key)))
            record = json.loads(read.contents[0].text)  # type: ignore[union-attr]
            assert record["data"] == value and record["version"] == 1 and record["key"] == key
        # Any scope id can be read by URI, not only the listed ones.
        other = await s.read_resource(
            AnyUrl(resource_uri("session", "someone-else", f"private-{unique}"))
        )
        assert json.loads(other.contents[0].text)["data"] == 1  # type: ignore[union-attr]

        with pytest.raises(McpError) as missing:
            await s.read_resource(AnyUrl(resource_uri("session", sid, "absent")))
        assert missing.value.error.data["code"] == "not_found"
        with pytest.raises(McpError) as bad:
            await s.read_resource(AnyUrl("agentfield://team/x/y"))
        assert bad.value.error.data["code"] == "invalid_resource"


@pytest.mark.parametrize("kind", REMOTE_KINDS)
async def test_subscription_is_notified_of_rest_writes(
    kind: str, mcp_server: ServerProcess, tmp_path: Path, unique: str
) -> None:
    sid = f"s-{unique}"
    watched = resource_uri("session", sid, "status*")  # glob characters match literally
    notes = Notifications()
    async with (
        MemoryClient(mcp_server.url) as rest,
        session_factory(kind, mcp_server, tmp_path)(sid, notes) as s,
    ):
        await s.subscribe_resource(AnyUrl(watched))
        await rest.session(sid).set("statusX", "not this one")
        await rest.session("other").set("status*", "nor this one")
        await rest.session(sid).set("status*", "busy")
        assert await notes.wait_for(1) == [watched]
        # A write through MCP is a writer like any other.
        await ok(s, "memory_set", key="status*", value="idle")
        await rest.session(sid).delete("status*")
        assert await notes.wait_for(3) == [watched] * 3

        await s.unsubscribe_resource(AnyUrl(watched))
        marker = resource_uri("session", sid, "marker")
        await s.subscribe_resource(AnyUrl(marker))
        await rest.session(sid).set("status*", "after")  # written first, not notified
        await rest.session(sid).set("marker", 1)
        assert await notes.wait_for(4) == [watched] * 3 + [marker]
