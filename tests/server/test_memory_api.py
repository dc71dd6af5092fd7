"""The memory routes in process (httpx ASGITransport), on both backends: the protocol's
set/get/delete/list semantics, scope rules and hierarchical reads."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from memory_api_support import (
    CHAIN,
    HEADER,
    IDS,
    RFC3339_Z,
    assert_error,
    headers_for,
    snapshot,
)

from agentfield_asgi.server.app import MemoryService

API = "/api/v1/memory"


async def call(
    client: httpx.AsyncClient,
    route: str,
    body: dict[str, object],
    scope: str | None,
    headers: dict[str, str] | None,
) -> httpx.Response:
    if scope is not None:
        body["scope"] = scope
    return await client.post(f"{API}/{route}", json=body, headers=headers or {})


async def put(
    client: httpx.AsyncClient,
    key: str,
    data: object,
    scope: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    return await call(client, "set", {"key": key, "data": data}, scope, headers)


def _keyed(route: str) -> Callable[..., Awaitable[httpx.Response]]:
    """A call to ``route`` with just a key: ``(client, key, scope=None, headers=None)``."""

    async def send(
        client: httpx.AsyncClient,
        key: str,
        scope: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        return await call(client, route, {"key": key}, scope, headers)

    return send


fetch = _keyed("get")
remove = _keyed("delete")


# ------------------------------------------------------------------ set / get / delete / list


async def test_set_returns_the_stored_record(client: httpx.AsyncClient) -> None:
    r = await put(
        client,
        "ticket_priority",
        {"level": "high", "n": [1, 2]},
        "workflow",
        headers_for("workflow"),
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    record = r.json()
    assert record["scope"] == "workflow"
    assert record["scope_id"] == IDS["workflow"]
    assert record["key"] == "ticket_priority"
    assert record["data"] == {"level": "high", "n": [1, 2]}
    assert record["access_level"] == "private"
    assert record["metadata"] == {}
    for field in ("created_at", "updated_at"):
        assert RFC3339_Z.match(record[field]), record[field]


async def test_get_reads_back_what_set_stored(client: httpx.AsyncClient) -> None:
    values = ["text", 42, 3.5, True, False, [1, "two", None], {"nested": {"deep": [{}]}}, "ünï😀"]
    for i, value in enumerate(values):
        assert (await put(client, f"k{i}", value, "global")).status_code == 200
    for i, value in enumerate(values):
        r = await fetch(client, f"k{i}", "global")
        assert r.status_code == 200
        assert r.json()["data"] == value
        assert r.json()["key"] == f"k{i}"


async def test_get_miss_is_404_with_error_body(client: httpx.AsyncClient) -> None:
    assert_error(await fetch(client, "absent"), 404, "not_found")
    assert_error(await fetch(client, "absent", "session", headers_for("session")), 404, "not_found")


async def test_set_overwrites_and_keeps_created_at(client: httpx.AsyncClient) -> None:
    first = (await put(client, "k", 1, "global")).json()
    second = (await put(client, "k", 2, "global")).json()
    assert second["data"] == 2
    assert second["created_at"] == first["created_at"]
    assert second["updated_at"] >= first["updated_at"]
    assert (await fetch(client, "k", "global")).json()["data"] == 2


async def test_stored_null_is_a_hit(client: httpx.AsyncClient) -> None:
    r = await put(client, "nothing", None, "global")
    assert r.status_code == 200 and r.json()["data"] is None
    got = await fetch(client, "nothing")
    assert got.status_code == 200
    assert "data" in got.json() and got.json()["data"] is None
    # A null in a narrower scope shadows a value in a wider one.
    await put(client, "shadow", "wide", "global")
    await put(client, "shadow", None, "session", headers_for("session"))
    assert (await fetch(client, "shadow", headers=headers_for("session"))).json()["data"] is None


async def test_timestamps_are_rfc3339_utc_with_z(client: httpx.AsyncClient) -> None:
    record = (await put(client, "when", 1, "global")).json()
    listed = (await client.get(f"{API}/list", params={"scope": "global"})).json()[0]
    for ts in (record["created_at"], record["updated_at"], listed["created_at"]):
        assert RFC3339_Z.match(ts), ts
        parsed = datetime.fromisoformat(ts.replace("Z", "+00:00"))
        assert parsed.utcoffset() == timedelta(0)
        # Generous bound: only checks the clock is UTC, not how fast anything was.
        assert abs(datetime.now(UTC) - parsed) < timedelta(hours=1)


async def test_delete_is_204_and_removes(client: httpx.AsyncClient, service: MemoryService) -> None:
    await put(client, "gone", "x", "global")
    before = await service.store.last_event_id()
    r = await remove(client, "gone", "global")
    assert r.status_code == 204 and r.content == b""
    assert_error(await fetch(client, "gone"), 404, "not_found")
    assert await service.store.last_event_id() == before + 1


async def test_delete_absent_is_204_and_records_no_event(
    client: httpx.AsyncClient, service: MemoryService
) -> None:
    await put(client, "other", 1, "global")
    state = await snapshot(service)
    for scope in (None, "global", "session"):
        r = await remove(client, "never-set", scope, headers_for("session"))
        assert r.status_code == 204
    assert await snapshot(service) == state
    # Deleting twice: the second is a no-op too.
    await put(client, "twice", 1, "global")
    assert (await remove(client, "twice", "global")).status_code == 204
    state = await snapshot(service)
    assert (await remove(client, "twice", "global")).status_code == 204
    assert await snapshot(service) == state


async def test_list_returns_records_of_one_scope_sorted(client: httpx.AsyncClient) -> None:
    h = headers_for("session")
    for key in ("b", "a", "c"):
        await put(client, key, key.upper(), "session", h)
    await put(client, "z-global", 1, "global")
    await put(client, "other-session", 1, "session", headers_for("session", session="sess-2"))
    r = await client.get(f"{API}/list", params={"scope": "session"}, headers=h)
    assert r.status_code == 200
    items = r.json()
    assert [i["key"] for i in items] == ["a", "b", "c"]
    assert [i["data"] for i in items] == ["A", "B", "C"]
    assert {(i["scope"], i["scope_id"]) for i in items} == {("session", IDS["session"])}
    empty = await client.get(f"{API}/list", params={"scope": "actor"}, headers=headers_for("actor"))
    assert empty.status_code == 200 and empty.json() == []


async def test_list_without_scope_is_400(client: httpx.AsyncClient) -> None:
    assert_error(await client.get(f"{API}/list"), 400, "missing_scope")
    assert_error(await client.get(f"{API}/list", headers=headers_for("workflow")), 400)
    assert_error(await client.get(f"{API}/list", params={"scope": "team"}), 400, "invalid_scope")


# ------------------------------------------------------------------ scopes


@pytest.mark.parametrize("scope", ["workflow", "session", "actor"])
async def test_scope_isolation(client: httpx.AsyncClient, scope: str) -> None:
    a = {HEADER[scope]: f"{scope}-A"}
    b = {HEADER[scope]: f"{scope}-B"}
    assert (await put(client, "secret", "for A", scope, a)).status_code == 200
    assert (await put(client, "only-a", 1, None, a)).json()["scope_id"] == f"{scope}-A"
    # B never sees A's keys: not scoped, not unscoped, not in its list.
    assert_error(await fetch(client, "secret", scope, b), 404, "not_found")
    assert_error(await fetch(client, "secret", None, b), 404, "not_found")
    assert_error(await fetch(client, "only-a", None, b), 404, "not_found")
    listed = await client.get(f"{API}/list", params={"scope": scope}, headers=b)
    assert listed.json() == []
    # B's delete of the same key does not touch A's.
    assert (await remove(client, "secret", scope, b)).status_code == 204
    assert (await fetch(client, "secret", scope, a)).json()["data"] == "for A"
    # B writing the same key leaves A's value alone.
    await put(client, "secret", "for B", scope, b)
    assert (await fetch(client, "secret", scope, a)).json()["data"] == "for A"
    assert (await fetch(client, "secret", scope, b)).json()["data"] == "for B"
    # Nor is the key visible in another scope kind with the same id.
    for other in ("workflow", "session", "actor"):
        if other != scope:
            h = {HEADER[other]: f"{scope}-A"}
            assert_error(await fetch(client, "secret", other, h), 404, "not_found")


async def test_global_is_shared_by_everyone(client: httpx.AsyncClient) -> None:
    await put(client, "config", {"t": 0.2}, "global", headers_for("session"))
    for h in ({}, headers_for("workflow"), headers_for("session", session="someone-else")):
        r = await fetch(client, "config", None, h)
        assert r.status_code == 200 and r.json()["scope"] == "global"
        assert r.json()["scope_id"] == "global"


def _subsets(items: tuple[str, ...]) -> list[tuple[str, ...]]:
    return [c for n in range(len(items) + 1) for c in itertools.combinations(items, n)]


async def test_hierarchical_read_every_combination(client: httpx.AsyncClient) -> None:
    """Every set of present headers x every set of scopes holding the key: an unscoped get
    answers from the first scope, in workflow, session, actor, global order, that both has
    its header (global always does) and holds the key; else 404."""
    everywhere = headers_for("workflow", "session", "actor")
    holders = _subsets(CHAIN)
    for held in holders:
        key = "k-" + "-".join(held or ("none",))
        for scope in held:
            r = await put(client, key, f"from {scope}", scope, everywhere)
            assert r.status_code == 200
    for present in _subsets(("workflow", "session", "actor")):
        h = headers_for(*present)
        for held in holders:
            key = "k-" + "-".join(held or ("none",))
            expected = next(
                (s for s in CHAIN if s in held and (s in present or s == "global")), None
            )
            r = await fetch(client, key, None, h)
            if expected is None:
                assert_error(r, 404, "not_found")
                continue
            assert r.status_code == 200, (present, held, r.text)
            record = r.json()
            assert (record["scope"], record["scope_id"], record["data"]) == (
                expected,
                IDS[expected],
                f"from {expected}",
            ), (present, held)


@pytest.mark.parametrize("present", _subsets(("workflow", "session", "actor")))
async def test_unscoped_write_and_delete_target(
    client: httpx.AsyncClient, present: tuple[str, ...]
) -> None:
    target = next((s for s in CHAIN if s in present), "global")
    h = headers_for(*present)
    r = await put(client, "auto", "v", None, h)
    assert r.status_code == 200
    assert (r.json()["scope"], r.json()["scope_id"]) == (target, IDS[target])
    # The record is where the write said, and nowhere else.
    everywhere = headers_for("workflow", "session", "actor")
    for scope in CHAIN:
        got = await fetch(client, "auto", scope, everywhere)
        assert got.status_code == (200 if scope == target else 404), scope
    # An unscoped delete acts on the same scope and leaves the others alone.
    if target != "global":
        await put(client, "auto", "wide", "global")
    assert (await remove(client, "auto", None, h)).status_code == 204
    assert_error(await fetch(client, "auto", target, everywhere), 404, "not_found")
    if target != "global":
        assert (await fetch(client, "auto", "global")).json()["data"] == "wide"


async def test_run_id_stands_in_for_a_missing_workflow_id(client: httpx.AsyncClient) -> None:
    for header in ("X-Run-ID", "X-Workflow-Run-ID"):
        r = await put(client, "run-key", header, None, {header: "run-7"})
        assert (r.json()["scope"], r.json()["scope_id"]) == ("workflow", "run-7")
        got = await fetch(client, "run-key", "workflow", {"X-Workflow-ID": "run-7"})
        assert got.json()["data"] == header
    # An explicit workflow id wins over the run id.
    r = await put(client, "both", 1, None, {"X-Workflow-ID": "wf-x", "X-Run-ID": "run-7"})
    assert r.json()["scope_id"] == "wf-x"


async def test_scoped_calls_use_exactly_that_scope(client: httpx.AsyncClient) -> None:
    everywhere = headers_for("workflow", "session", "actor")
    await put(client, "k", "global value", "global", everywhere)
    # A scoped get does not fall back to wider scopes.
    assert_error(await fetch(client, "k", "session", everywhere), 404, "not_found")
    r = await put(client, "k", "actor value", "actor", everywhere)
    assert (r.json()["scope"], r.json()["scope_id"]) == ("actor", IDS["actor"])
    assert (await fetch(client, "k", "actor", everywhere)).json()["data"] == "actor value"
    assert (await fetch(client, "k", "global", everywhere)).json()["data"] == "global value"
    # The SDK's global client sends scope "global" with no scope header at all.
    assert (await fetch(client, "k", "global")).json()["data"] == "global value"


@pytest.mark.parametrize("scope", ["workflow", "session", "actor"])
async def test_scoped_call_without_its_header_is_400(
    client: httpx.AsyncClient, service: MemoryService, scope: str
) -> None:
    others = headers_for(*(s for s in ("workflow", "session", "actor") if s != scope))
    await put(client, "k", 1, None, others)
    state = await snapshot(service)
    for response in (
        await put(client, "k", 2, scope, others),
        await fetch(client, "k", scope, others),
        await remove(client, "k", scope, others),
        await client.get(f"{API}/list", params={"scope": scope}, headers=others),
    ):
        body = assert_error(response, 400, "missing_scope_id")
        assert body["details"]["header"] == HEADER[scope]
    assert await snapshot(service) == state


async def test_scope_null_or_empty_means_unscoped(client: httpx.AsyncClient) -> None:
    h = headers_for("session")
    for scope in (None, ""):
        r = await client.post(f"{API}/set", json={"key": "k", "data": 1, "scope": scope}, headers=h)
        assert (r.json()["scope"], r.json()["scope_id"]) == ("session", IDS["session"])


async def test_event_metadata_records_the_caller(
    client: httpx.AsyncClient, service: MemoryService
) -> None:
    h = {**headers_for("workflow", "actor"), "X-Agent-Node-ID": "support-agent"}
    await put(client, "cart", {"n": 1}, "actor", h)
    events = await service.store.events_after(0, 10)
    assert events[-1].metadata == {
        "agent_id": "support-agent",
        "actor_id": IDS["actor"],
        "workflow_id": IDS["workflow"],
    }
    assert (events[-1].scope, events[-1].key, events[-1].action) == ("actor", "cart", "set")


async def test_keys_are_matched_literally(client: httpx.AsyncClient) -> None:
    for key in ("a*", "a?", "[ab]", "a%", "a_b", "a\\b", "a b", "ключ"):
        await put(client, key, key, "global")
    for key in ("a*", "a?", "[ab]", "a%", "a_b", "a\\b", "a b", "ключ"):
        assert (await fetch(client, key, "global")).json()["data"] == key
    assert_error(await fetch(client, "ab", "global"), 404)
    assert_error(await fetch(client, "a", "global"), 404)
    assert_error(await fetch(client, "aXb", "global"), 404)
