"""Many clients, one truth, on PostgreSQL: two stdio MCP servers opening the database
themselves, an MCP session over HTTP and a REST client, all on one database."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from mcp import ClientSession
from pydantic import AnyUrl

from agentfield_asgi.client import MemoryClient
from agentfield_asgi.errors import MemoryAccessError
from agentfield_asgi.integrations.mcp import resource_uri
from agentfield_asgi.testing import ServerProcess, ThrowawayPostgres
from agentfield_asgi.testing.waits import wait_until

from .support import Notifications, call, http_session, ok, stdio_session

pytestmark = pytest.mark.postgres
ROUNDS = 25


@pytest.fixture
def pg_url(pg_cluster: ThrowawayPostgres) -> str:
    return pg_cluster.create_database()


@pytest.fixture
def pg_server(pg_url: str) -> Iterator[ServerProcess]:
    server = ServerProcess(["--database-url", pg_url, "--mcp"]).start()
    yield server
    server.stop()


async def _mcp_increments(session: ClientSession) -> None:
    for _ in range(ROUNDS):
        await ok(session, "memory_increment", key="hits", scope="global")


async def _rest_increments(rest: MemoryClient) -> None:
    for _ in range(ROUNDS):
        await rest.global_scope.incr("hits")


async def test_increment_race_and_compare_and_set_race(
    pg_url: str, pg_server: ServerProcess
) -> None:
    args = ["--database-url", pg_url]
    async with (
        stdio_session(args) as a,
        stdio_session(args) as b,
        http_session(pg_server.url + "/mcp") as h,
        MemoryClient(pg_server.url) as rest,
    ):
        await asyncio.gather(
            _mcp_increments(a), _mcp_increments(b), _mcp_increments(h), _rest_increments(rest)
        )
        final = await ok(a, "memory_get", key="hits", scope="global")
        assert final["data"] == 4 * ROUNDS and final["version"] == 4 * ROUNDS
        assert await rest.global_scope.get("hits") == 4 * ROUNDS

        # Everyone read version 1 and tries to write on it: exactly one wins.
        start = await ok(b, "memory_set", key="owner", value="nobody", scope="global")

        async def rest_cas() -> tuple[bool, object]:
            try:
                await rest.global_scope.set("owner", "rest", if_version=start["version"])
            except MemoryAccessError as exc:
                assert exc.code == "version_conflict"
                return False, "rest"
            return True, "rest"

        async def mcp_cas(session: ClientSession, name: str) -> tuple[bool, object]:
            is_error, body = await call(
                session,
                "memory_compare_and_set",
                key="owner",
                value=name,
                expected_version=start["version"],
                scope="global",
            )
            if is_error:
                assert body["code"] == "version_conflict", body
            return not is_error, name

        results = await asyncio.gather(
            mcp_cas(a, "a"), mcp_cas(b, "b"), mcp_cas(h, "http"), rest_cas()
        )
        winners = [name for won, name in results if won]
        assert len(winners) == 1
        owner = await ok(h, "memory_get", key="owner", scope="global")
        assert owner["data"] == winners[0] and owner["version"] == start["version"] + 1


async def test_subscription_sees_writes_of_other_instances(
    pg_url: str, pg_server: ServerProcess
) -> None:
    notes = Notifications()
    uri = resource_uri("session", "shared", "doc")
    args = ["--database-url", pg_url]
    async with (
        stdio_session([*args, "--session-id", "shared"], notifications=notes) as watcher,
        stdio_session(args) as writer,
        MemoryClient(pg_server.url) as rest,
    ):
        await watcher.subscribe_resource(AnyUrl(uri))
        await rest.session("shared").set("doc", "from REST")  # another server instance
        assert await notes.wait_for(1) == [uri]
        await ok(
            writer, "memory_set", key="doc", value="from MCP", scope="session", scope_id="shared"
        )
        assert await notes.wait_for(2) == [uri, uri]
        record = await ok(watcher, "memory_get", key="doc")  # default session id: shared
        assert record["data"] == "from MCP" and record["version"] == 2


async def test_sessions_survive_a_postgres_restart(own_pg_cluster: ThrowawayPostgres) -> None:
    """While PostgreSQL is down tool calls fail as tool errors (``storage_unavailable``),
    the MCP sessions stay up, and once it is back they work again with nothing lost; a
    subscription made before the outage is notified of writes after it."""
    url = own_pg_cluster.create_database()
    notes = Notifications()
    uri = resource_uri("global", "global", "after-restart")
    server = ServerProcess(["--database-url", url, "--mcp"]).start()
    try:
        async with (
            http_session(server.url + "/mcp", notifications=notes) as h,
            stdio_session(["--database-url", url]) as s,
            MemoryClient(server.url) as rest,
        ):
            await ok(h, "memory_set", key="kept", value="before", scope="global")
            await h.subscribe_resource(AnyUrl(uri))
            await asyncio.to_thread(own_pg_cluster.stop)
            for session in (h, s):
                is_error, body = await call(session, "memory_get", key="kept", scope="global")
                assert is_error and body["code"] == "storage_unavailable", body
            await asyncio.to_thread(own_pg_cluster.start)

            async def answers(session: ClientSession) -> bool:
                is_error, body = await call(session, "memory_get", key="kept", scope="global")
                return not is_error and body["data"] == "before"

            await wait_until(lambda: answers(h), "HTTP session did not recover", within=60)
            await wait_until(lambda: answers(s), "stdio session did not recover", within=60)
            await rest.global_scope.set("after-restart", 1)
            assert await notes.wait_for(1, timeout=60) == [uri]
    finally:
        server.stop()
