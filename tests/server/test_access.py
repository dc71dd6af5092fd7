"""Per-key access control from ``--api-keys-file``: a table of keys x routes x scopes
(allowed and refused) on a live server, streams that never deliver an event the key may
not read, hierarchical reads through readable scopes only, reload on SIGHUP, validation
at start, keys never logged."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from agentfield_asgi.testing import ServerProcess
from agentfield_asgi.testing.waits import wait_until

# The example file, verbatim, plus a plain --api-key (full access).
KEYS_FILE = {
    "keys": [
        {"key": "k-agent-a", "read": ["actor:agent-a", "global:*"], "write": ["actor:agent-a"]},
        {
            "key": "k-tenant-1",
            "read": ["session:tenant1-*", "workflow:*"],
            "write": ["session:tenant1-*", "workflow:*"],
        },
        {"key": "k-ops", "read": ["*"], "write": ["*"], "admin": True},
    ]
}
A, T, OPS, PLAIN = "k-agent-a", "k-tenant-1", "k-ops", "k-plain"
M = "/api/v1/memory"
ACTOR_A = {"X-Actor-ID": "agent-a"}
ACTOR_B = {"X-Actor-ID": "agent-b"}
SESSION_1 = {"X-Session-ID": "tenant1-x"}
SESSION_2 = {"X-Session-ID": "tenant2-x"}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps(KEYS_FILE))
    db = f"sqlite:///{tmp_path / 'm.db'}"
    args = ["--database-url", db, "--api-keys-file", str(keys), "--api-key", PLAIN]
    with ServerProcess(args) as srv:
        srv.keys_path = keys  # type: ignore[attr-defined]
        yield srv


def call(
    url: str, key: str | None, method: str, path: str, headers: dict[str, str] | None = None,
    body: Any = None, params: dict[str, str] | None = None,
) -> httpx.Response:  # fmt: skip
    sent = dict(headers or {})
    if key is not None:
        sent["X-API-Key"] = key
    return httpx.request(method, url + path, headers=sent, json=body, params=params, timeout=30)


def seed(url: str) -> None:
    """What the table reads, written with the admin key."""
    for headers, scope, value in (
        (ACTOR_A, "actor", "actor-a"),
        (ACTOR_B, "actor", "actor-b"),
        (SESSION_1, "session", "session-1"),
        (SESSION_2, "session", "session-2"),
        ({}, "global", "global"),
    ):
        body = {"key": "shadow", "data": value, "scope": scope}
        assert call(url, OPS, "POST", f"{M}/set", headers, body).status_code == 200


EXEC = "{execution}"  # replaced in the table by the id start_execution returns


def start_execution(url: str) -> str:
    """An execution in workflow ``wf-exec`` (of a node at an address nothing listens on)."""
    node = {"node_id": "n-exec", "base_url": "http://127.0.0.1:9", "reasoners": ["r"]}
    assert call(url, OPS, "POST", "/api/v1/nodes/register", {}, node).status_code == 201
    started = call(
        url, OPS, "POST", "/api/v1/execute/async/n-exec.r", {"X-Workflow-ID": "wf-exec"},
        {"input": {}},
    )  # fmt: skip
    assert started.status_code == 202, started.text
    assert started.json()["workflow_id"] == "wf-exec"
    return str(started.json()["execution_id"])


def v(key: str) -> dict[str, Any]:
    return {"key": key, "embedding": [0.1, 0.2, 0.3]}


# (key, method, path, headers, body or query, expected status)
TABLE: list[tuple[str, str, str, dict[str, str], Any, int]] = [
    # set: own actor scope only for agent-a; tenant-1 its sessions; ops and plain everything
    (A, "POST", f"{M}/set", ACTOR_A, {"key": "k", "data": 1, "scope": "actor"}, 200),
    (A, "POST", f"{M}/set", ACTOR_A, {"key": "k", "data": 1}, 200),  # unscoped -> actor
    (A, "POST", f"{M}/set", ACTOR_B, {"key": "k", "data": 1, "scope": "actor"}, 403),
    (A, "POST", f"{M}/set", {}, {"key": "k", "data": 1, "scope": "global"}, 403),  # read-only
    (A, "POST", f"{M}/set", SESSION_1, {"key": "k", "data": 1, "scope": "session"}, 403),
    (T, "POST", f"{M}/set", SESSION_1, {"key": "k", "data": 1, "scope": "session"}, 200),
    (T, "POST", f"{M}/set", SESSION_2, {"key": "k", "data": 1, "scope": "session"}, 403),
    (T, "POST", f"{M}/set", ACTOR_A, {"key": "k", "data": 1, "scope": "actor"}, 403),
    (OPS, "POST", f"{M}/set", ACTOR_B, {"key": "k", "data": 1, "scope": "actor"}, 200),
    (PLAIN, "POST", f"{M}/set", {}, {"key": "k", "data": 1, "scope": "global"}, 200),
    # get: scoped
    (A, "POST", f"{M}/get", {}, {"key": "shadow", "scope": "global"}, 200),
    (A, "POST", f"{M}/get", ACTOR_B, {"key": "shadow", "scope": "actor"}, 403),
    (T, "POST", f"{M}/get", {}, {"key": "shadow", "scope": "global"}, 403),
    (T, "POST", f"{M}/get", SESSION_1, {"key": "shadow", "scope": "session"}, 200),
    (T, "POST", f"{M}/get", SESSION_2, {"key": "shadow", "scope": "session"}, 403),
    # get: unscoped, with no readable scope in the chain
    (T, "POST", f"{M}/get", ACTOR_A, {"key": "shadow"}, 403),
    # delete, incr
    (A, "POST", f"{M}/delete", ACTOR_A, {"key": "nothing", "scope": "actor"}, 204),
    (T, "POST", f"{M}/delete", ACTOR_A, {"key": "shadow", "scope": "actor"}, 403),
    (A, "POST", f"{M}/incr", ACTOR_A, {"key": "n"}, 200),
    (A, "POST", f"{M}/incr", SESSION_1, {"key": "n", "scope": "session"}, 403),
    # list
    (A, "GET", f"{M}/list", ACTOR_A, {"scope": "actor"}, 200),
    (A, "GET", f"{M}/list", ACTOR_B, {"scope": "actor"}, 403),
    (T, "GET", f"{M}/list", SESSION_1, {"scope": "session"}, 200),
    (T, "GET", f"{M}/list", {}, {"scope": "global"}, 403),
    # batch: one forbidden op refuses the whole batch
    (A, "POST", f"{M}/batch", ACTOR_A, {"ops": [{"op": "set", "key": "b", "data": 1}]}, 200),
    (
        A,
        "POST",
        f"{M}/batch",
        ACTOR_A,
        {
            "ops": [
                {"op": "set", "key": "b2", "data": 1},
                {"op": "set", "key": "b2", "data": 1, "scope": "global"},
            ]
        },
        403,
    ),
    (T, "POST", f"{M}/get_many", ACTOR_A, {"keys": ["shadow"]}, 403),
    (A, "POST", f"{M}/get_many", ACTOR_A, {"keys": ["shadow"]}, 200),
    # clear is administration
    (A, "POST", f"{M}/clear", ACTOR_A, {"scope": "actor"}, 403),
    (T, "POST", f"{M}/clear", SESSION_1, {"scope": "session"}, 403),
    (OPS, "POST", f"{M}/clear", {"X-Actor-ID": "agent-c"}, {"scope": "actor"}, 200),
    # vectors
    (A, "POST", f"{M}/vector/set", ACTOR_A, v("e"), 200),
    (T, "POST", f"{M}/vector/set", ACTOR_A, v("e"), 403),
    (A, "POST", f"{M}/vector/search", ACTOR_A, {"query_embedding": [0.1, 0.2, 0.3]}, 200),
    (T, "POST", f"{M}/vector/search", ACTOR_A, {"query_embedding": [0.1, 0.2, 0.3]}, 403),
    (T, "POST", f"{M}/vector/delete", ACTOR_A, {"key": "e"}, 403),
    (A, "POST", f"{M}/vector/delete", ACTOR_A, {"key": "e"}, 204),
    # query and keys (LangGraph's reads) and vector ops inside a batch
    (A, "POST", f"{M}/keys", ACTOR_A, {"scope": "actor"}, 200),
    (A, "POST", f"{M}/keys", ACTOR_B, {"scope": "actor"}, 403),
    (T, "POST", f"{M}/query", ACTOR_A, {"scope": "actor"}, 403),
    (T, "POST", f"{M}/query", SESSION_1, {"scope": "session"}, 200),
    (
        T,
        "POST",
        f"{M}/batch",
        ACTOR_A,
        {"ops": [{"op": "vector_set", "key": "bv", "embedding": [1.0, 0.0], "scope": "actor"}]},
        403,
    ),
    # history narrowed to one scope id
    (A, "GET", f"{M}/events/history", {}, {"scope": "actor", "scope_id": "agent-a"}, 200),
    (A, "GET", f"{M}/events/history", {}, {"scope": "actor", "scope_id": "agent-b"}, 403),
    # control plane
    (A, "POST", "/api/v1/nodes/register", {}, {"node_id": "n1"}, 403),
    (T, "POST", "/api/v1/nodes/register", {}, {"node_id": "n1"}, 403),
    (OPS, "POST", "/api/v1/nodes/register", {}, {"node_id": "n1"}, 201),
    (A, "GET", "/api/v1/nodes", {}, None, 200),
    (A, "GET", "/api/v1/workflows/wf-1", {}, None, 403),
    (T, "GET", "/api/v1/workflows/wf-1", {}, None, 404),
    (A, "POST", "/api/v1/workflows/wf-1/complete", {}, {}, 403),
    (T, "POST", "/api/v1/workflows/wf-1/complete", {}, {}, 200),
    (A, "POST", "/api/v1/execute/n1.r", {}, {"input": {}}, 403),
    (T, "POST", "/api/v1/execute/n1.r", {"X-Workflow-ID": "wf-2"}, {"input": {}}, 404),
    # an execution (made by start_execution, in workflow wf-exec): read / write that workflow.
    # A bad status is refused after the access check: 400 means the key got that far.
    (A, "GET", f"/api/v1/executions/{EXEC}", {}, None, 403),
    (T, "GET", f"/api/v1/executions/{EXEC}", {}, None, 200),
    (OPS, "GET", f"/api/v1/executions/{EXEC}", {}, None, 200),
    (A, "POST", f"/api/v1/executions/{EXEC}/status", {}, {"status": "bogus"}, 403),
    (T, "POST", f"/api/v1/executions/{EXEC}/status", {}, {"status": "bogus"}, 400),
    (PLAIN, "POST", f"/api/v1/executions/{EXEC}/status", {}, {"status": "bogus"}, 400),
    # credentials
    ("k-unknown", "POST", f"{M}/get", {}, {"key": "shadow", "scope": "global"}, 401),
    (PLAIN, "POST", f"{M}/clear", SESSION_1, {"scope": "session"}, 200),
]


def test_keys_routes_scopes_table(server: ServerProcess) -> None:
    seed(server.url)
    execution_id = start_execution(server.url)
    failures = []
    for key, method, template, headers, payload, expected in TABLE:
        path = template.replace(EXEC, execution_id)
        body = payload if method == "POST" else None
        params = payload if method == "GET" else None
        r = call(server.url, key, method, path, headers, body, params)
        if r.status_code != expected:
            failures.append((key, method, path, headers, payload, expected, r.status_code, r.text))
        elif expected == 403:
            refusal = r.json()
            assert set(refusal) == {"error", "code", "details"} and refusal["code"] == "forbidden"
    assert not failures, "\n".join(map(str, failures))
    # The refused batch applied nothing.
    got = call(server.url, OPS, "POST", f"{M}/get", ACTOR_A, {"key": "b2", "scope": "actor"})
    assert got.status_code == 404
    # Keys are never logged, refused or not.
    output = server.output()
    assert all(k not in output for k in (A, T, OPS, PLAIN, "k-unknown")), output


def test_hierarchical_get_consults_only_readable_scopes(server: ServerProcess) -> None:
    seed(server.url)
    both = {**SESSION_1, **ACTOR_A}  # session comes before actor in the hierarchy
    assert call(server.url, OPS, "POST", f"{M}/get", both, {"key": "shadow"}).json()["data"] == (
        "session-1"
    )
    # agent-a may not read the session: the read skips it and finds its own actor value.
    mine = call(server.url, A, "POST", f"{M}/get", both, {"key": "shadow"})
    assert mine.status_code == 200 and mine.json()["data"] == "actor-a"
    # tenant-1 may not read the actor or global scopes: the session value.
    theirs = call(server.url, T, "POST", f"{M}/get", both, {"key": "shadow"})
    assert theirs.json()["data"] == "session-1"
    many = call(server.url, A, "POST", f"{M}/get_many", both, {"keys": ["shadow"]})
    assert many.json()["records"]["shadow"]["data"] == "actor-a"
    # The inspector's scope list shows only readable scopes.
    listed = call(server.url, A, "GET", f"{M}/scopes").json()
    assert {(s["scope"], s["scope_id"]) for s in listed} == {
        ("actor", "agent-a"),
        ("global", "global"),
    }
    # History without a scope filter leaves out what the key may not read.
    history = call(server.url, A, "GET", f"{M}/events/history", params={"limit": "1000"}).json()
    assert {(e["scope"], e["scope_id"]) for e in history} == {
        ("actor", "agent-a"),
        ("global", "global"),
    }
    paged = call(
        server.url, A, "GET", f"{M}/events/history", params={"since_id": "0", "limit": "1"}
    )
    assert [(e["scope"], e["scope_id"]) for e in paged.json()] == [("actor", "agent-a")]


async def test_streams_deliver_only_readable_events(server: ServerProcess) -> None:
    """An event the key may not read never arrives: each forbidden write is made before an
    allowed one, so a leak would arrive first."""
    url = server.url
    ws_url = url.replace("http://", "ws://") + f"{M}/events/ws"
    async with (
        httpx.AsyncClient(base_url=url, timeout=30) as client,
        client.stream("GET", f"{M}/events/sse", headers={"X-API-Key": A}) as sse,
        websockets.connect(ws_url, additional_headers={"X-API-Key": A}) as ws,
    ):
        assert sse.status_code == 200
        lines = sse.aiter_lines()
        assert await anext(lines) == ": connected"
        await asyncio.sleep(0.2)  # both subscriptions registered
        writes = [
            (SESSION_1, "session", "secret-1"),
            (ACTOR_B, "actor", "secret-2"),
            (ACTOR_A, "actor", "visible-1"),
            ({}, "global", "visible-2"),
        ]
        for headers, scope, key in writes:
            body = {"key": key, "data": 1, "scope": scope}
            sent = {**headers, "X-API-Key": OPS}
            assert (await client.post(f"{M}/set", json=body, headers=sent)).status_code == 200
        sse_keys: list[str] = []
        while len(sse_keys) < 2:
            line = await anext(lines)
            if line.startswith("data: "):
                sse_keys.append(json.loads(line[6:])["key"])
        ws_keys = [json.loads(await ws.recv())["key"] for _ in range(2)]
    assert sse_keys == ws_keys == ["visible-1", "visible-2"]

    # A stream narrowed to a scope id the key may not read is refused before it starts.
    narrowed = {"scope": "session", "scope_id": "tenant1-x"}
    refused = call(url, A, "GET", f"{M}/events/sse", params=narrowed)
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    with pytest.raises(websockets.InvalidStatus) as denied:
        async with websockets.connect(
            ws_url + "?scope=actor&scope_id=agent-b", additional_headers={"X-API-Key": A}
        ):
            pass
    assert denied.value.response.status_code == 403


async def test_sighup_reloads_the_keys_file(server: ServerProcess) -> None:
    keys: Path = server.keys_path  # type: ignore[attr-defined]
    body = {"key": "k", "data": 1, "scope": "actor"}
    assert call(server.url, A, "POST", f"{M}/set", ACTOR_A, body).status_code == 200
    changed = json.loads(json.dumps(KEYS_FILE))
    changed["keys"][0]["write"] = []  # agent-a becomes read-only
    changed["keys"].append({"key": "k-new", "read": ["*"], "write": []})
    await asyncio.to_thread(keys.write_text, json.dumps(changed))
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGHUP)
    await wait_until(
        lambda: call(server.url, A, "POST", f"{M}/set", ACTOR_A, body).status_code == 403,
        "the reloaded file did not take effect",
    )
    assert call(server.url, "k-new", "POST", f"{M}/get", ACTOR_A, body).status_code == 200
    # A broken file on reload keeps the keys in force (and says so in the log, keyless).
    await asyncio.to_thread(keys.write_text, "{not json")
    os.kill(server.proc.pid, signal.SIGHUP)
    await wait_until(lambda: "not reloaded" in server.output(), "no log line for a bad reload")
    assert call(server.url, "k-new", "POST", f"{M}/get", ACTOR_A, body).status_code == 200
    assert "k-new" not in server.output()


@pytest.mark.parametrize(
    ("content", "suffix", "message"),
    [
        ("{not json", ".json", "is not valid JSON"),
        ('{"keys": []}', ".json", "needs a non-empty 'keys' array"),
        ('{"keys": [{"key": "s3cret", "read": ["tenant:*"]}]}', ".json", "keys[0]: 'read'"),
        ('{"keys": [{"key": "s3cret", "reed": ["*"]}]}', ".json", "unknown fields ['reed']"),
        ('{"keys": [{"key": "s3cret", "admin": "yes"}]}', ".json", "'admin' must be true"),
        ('[[keys]]\nkey = "s3cret"\nread = ["actor:[x"]\n', ".toml", "keys[0]: 'read'"),
    ],
)
def test_bad_keys_file_stops_serve_with_a_clear_error(
    tmp_path: Path, content: str, suffix: str, message: str
) -> None:
    path = tmp_path / f"keys{suffix}"
    path.write_text(content)
    done = subprocess.run(
        [sys.executable, "-m", "agentfield_asgi", "serve", "--port", "0",
         "--database-url", f"sqlite:///{tmp_path / 'm.db'}", "--api-keys-file", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and str(path) in done.stderr
    assert "s3cret" not in done.stderr


def test_toml_keys_file_works(tmp_path: Path) -> None:
    path = tmp_path / "keys.toml"
    path.write_text('[[keys]]\nkey = "k-toml"\nread = ["global:*"]\nwrite = ["global:glob*"]\n')
    db = f"sqlite:///{tmp_path / 'm.db'}"
    with ServerProcess(["--database-url", db, "--api-keys-file", str(path)]) as srv:
        ok = call(srv.url, "k-toml", "POST", f"{M}/set", {}, {"key": "k", "data": 1})
        assert ok.status_code == 200  # global's id is "global", matched by "glob*"
        clear = call(srv.url, "k-toml", "POST", f"{M}/clear", {}, {"scope": "global"})
        assert clear.status_code == 403
