"""Every memory tool over every transport (the SDK's client against real processes):
the tool list and schemas, each tool's success and its errors."""

from __future__ import annotations

import pytest

from agentfield_asgi.testing import ServerProcess

from .conftest import SessionFactory, session_factory
from .support import call, fails, ok

TOOL_ARGS = {
    "memory_set": ({"key", "value", "ttl_seconds", "if_version"}, {"key", "value"}),
    "memory_get": ({"key", "default"}, {"key"}),
    "memory_exists": ({"key"}, {"key"}),
    "memory_delete": ({"key"}, {"key"}),
    "memory_list_keys": ({"prefix", "pattern", "limit", "cursor"}, set()),
    "memory_increment": ({"key", "by"}, {"key"}),
    "memory_compare_and_set": (
        {"key", "value", "expected_version"},
        {"key", "value", "expected_version"},
    ),
    "memory_history": ({"patterns", "since_id", "since", "limit"}, set()),
    "memory_set_vector": ({"key", "embedding", "metadata"}, {"key", "embedding"}),
    "memory_similarity_search": ({"query_embedding", "top_k", "filters"}, {"query_embedding"}),
}


@pytest.mark.parametrize("kind", ["http", "stdio-url"])
async def test_lists_every_tool_with_its_schema(
    kind: str, mcp_server: ServerProcess, tmp_path
) -> None:
    async with session_factory(kind, mcp_server, tmp_path)() as session:
        tools = {t.name: t for t in (await session.list_tools()).tools}
    assert set(tools) == set(TOOL_ARGS)
    for name, (args, required) in TOOL_ARGS.items():
        schema = tools[name].inputSchema
        assert schema["type"] == "object"
        assert set(schema["properties"]) == args | {"scope", "scope_id"}, name
        assert set(schema["required"]) == required, name
        assert schema["properties"]["scope"]["enum"] == ["workflow", "session", "actor", "global"]
        assert len(tools[name].description or "") > 40, name


async def test_every_tool_succeeds(open_session: SessionFactory, unique: str) -> None:
    sid = f"s-{unique}"
    async with open_session(sid) as s:
        stored = await ok(s, "memory_set", key="plan", value={"steps": [1, 2]})
        assert stored["scope"] == "session" and stored["scope_id"] == sid
        assert stored["data"] == {"steps": [1, 2]} and stored["version"] == 1
        again = await ok(s, "memory_set", key="plan", value=None, if_version=1)
        assert again["version"] == 2 and again["data"] is None

        got = await ok(s, "memory_get", key="plan")
        assert got["data"] is None and got["version"] == 2  # a stored null is a hit
        missing = await ok(s, "memory_get", key="nope", default="fallback")
        assert missing == {"key": "nope", "data": "fallback", "found": False}

        assert await ok(s, "memory_exists", key="plan") == {
            "key": "plan",
            "exists": True,
            "scope": "session",
            "scope_id": sid,
            "version": 2,
        }
        assert await ok(s, "memory_exists", key="nope") == {"key": "nope", "exists": False}

        for i in range(5):
            await ok(s, "memory_set", key=f"item:{i}", value=i)
        page1 = await ok(s, "memory_list_keys", prefix="item:", limit=3)
        assert page1["keys"] == ["item:0", "item:1", "item:2"] and page1["next_cursor"]
        page2 = await ok(
            s, "memory_list_keys", prefix="item:", limit=3, cursor=page1["next_cursor"]
        )
        assert page2 == {
            "scope": "session",
            "scope_id": sid,
            "keys": ["item:3", "item:4"],
            "next_cursor": None,
        }
        globbed = await ok(s, "memory_list_keys", pattern="item:[13]")
        assert globbed["keys"] == ["item:1", "item:3"]

        assert (await ok(s, "memory_increment", key="count"))["data"] == 1
        counted = await ok(s, "memory_increment", key="count", by=2.5)
        assert counted["data"] == 3.5 and counted["version"] == 2

        swapped = await ok(s, "memory_compare_and_set", key="plan", value="v3", expected_version=2)
        assert swapped["version"] == 3 and swapped["data"] == "v3"
        created = await ok(s, "memory_compare_and_set", key="fresh", value=1, expected_version=0)
        assert created["version"] == 1

        shared = await ok(s, "memory_set", key="plan", value="for all", scope="global")
        assert shared["scope"] == "global" and shared["scope_id"] == "global"
        # Unscoped reads look in session before global: the session's value wins.
        assert (await ok(s, "memory_get", key="plan"))["data"] == "v3"
        assert (await ok(s, "memory_get", key="plan", scope="global"))["data"] == "for all"
        other = await ok(
            s, "memory_set", key="plan", value="x", scope="session", scope_id=f"o-{unique}"
        )
        assert other["scope_id"] == f"o-{unique}"

        assert await ok(s, "memory_delete", key="fresh") == {"key": "fresh", "deleted": True}
        assert (await ok(s, "memory_exists", key="fresh"))["exists"] is False
        await ok(s, "memory_delete", key="fresh")  # absent: still fine

        history = await ok(
            s, "memory_history", patterns=["plan", "fresh"], scope="session", scope_id=sid
        )
        actions = [(e["key"], e["action"]) for e in history["events"]]
        assert actions == [
            ("plan", "set"),
            ("plan", "set"),
            ("plan", "set"),
            ("fresh", "set"),
            ("fresh", "delete"),
        ]
        first_id = history["events"][0]["id"]
        after = await ok(
            s,
            "memory_history",
            patterns=["plan"],
            scope="session",
            scope_id=sid,
            since_id=int(first_id),
        )
        assert [e["data"] for e in after["events"]] == [None, "v3"]
        assert len((await ok(s, "memory_history", patterns=["plan"], limit=1))["events"]) == 1

        vec = await ok(
            s, "memory_set_vector", key="doc:a", embedding=[1.0, 0.0, 0.0], metadata={"lang": "en"}
        )
        assert vec == {
            "key": "doc:a",
            "scope": "session",
            "scope_id": sid,
            "metadata": {"lang": "en"},
        }
        await ok(
            s, "memory_set_vector", key="doc:b", embedding=[0.0, 1.0, 0.0], metadata={"lang": "fr"}
        )
        found = await ok(s, "memory_similarity_search", query_embedding=[0.9, 0.1, 0.0], top_k=2)
        assert [r["key"] for r in found["results"]] == ["doc:a", "doc:b"]
        filtered = await ok(
            s, "memory_similarity_search", query_embedding=[1, 0, 0], filters={"lang": "fr"}
        )
        assert [r["key"] for r in filtered["results"]] == ["doc:b"]


async def test_every_tool_reports_errors_and_stores_nothing(
    open_session: SessionFactory, unique: str
) -> None:
    async with open_session(f"s-{unique}") as s:
        await fails(s, "memory_set", "invalid_key", key="", value=1)
        await fails(s, "memory_set", "invalid_key", key="k" * 1025, value=1)
        await fails(s, "memory_set", "payload_too_large", key="big", value="x" * (1024 * 1024 + 1))
        await fails(s, "memory_set", "invalid_parameter", key="t", value=1, ttl_seconds=-1)
        await fails(s, "memory_set", "invalid_parameter", key="t", value=1, colour="red")
        await fails(s, "memory_set", "invalid_parameter", key="t")
        await fails(s, "memory_set", "invalid_scope", key="t", value=1, scope="team")
        await fails(s, "memory_set", "missing_scope_id", key="t", value=1, scope="workflow")
        await fails(s, "memory_set", "missing_scope", key="t", value=1, scope_id="x")
        await ok(s, "memory_set", key="v", value="one")
        conflict = await fails(
            s, "memory_set", "version_conflict", key="v", value="two", if_version=7
        )
        assert conflict["details"]["current"]["data"] == "one"

        await fails(s, "memory_get", "not_found", key="never")
        await fails(s, "memory_get", "invalid_key", key=17)
        await fails(s, "memory_exists", "invalid_key", key="")
        await fails(s, "memory_delete", "invalid_key", key="")
        await fails(s, "memory_list_keys", "invalid_pattern", pattern="[oops")
        await fails(s, "memory_list_keys", "invalid_parameter", limit=0)
        await fails(s, "memory_increment", "invalid_parameter", key="n", by="many")
        await fails(s, "memory_increment", "not_a_number", key="v")
        lost = await fails(
            s, "memory_compare_and_set", "version_conflict", key="v", value="x", expected_version=0
        )
        assert lost["details"]["current"]["version"] == 1
        await fails(s, "memory_history", "invalid_parameter", since="last tuesday")
        await fails(s, "memory_history", "invalid_pattern", patterns=["[x"])
        await fails(s, "memory_set_vector", "invalid_embedding", key="e", embedding=[])
        await ok(s, "memory_set_vector", key="e", embedding=[1.0, 2.0])
        await fails(
            s, "memory_set_vector", "dimension_mismatch", key="f", embedding=[1.0, 2.0, 3.0]
        )
        await fails(s, "memory_similarity_search", "invalid_embedding", query_embedding="near")
        await fails(s, "memory_nonexistent", "unknown_tool")

        # Nothing a failed call carried was stored; the session still works.
        keys = (await ok(s, "memory_list_keys"))["keys"]
        assert keys == ["v"]
        assert (await ok(s, "memory_get", key="v"))["data"] == "one"
        assert (await call(s, "memory_exists", key="big"))[1]["exists"] is False
