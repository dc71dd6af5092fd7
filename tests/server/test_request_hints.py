"""Where a newcomer's mistake is common, the 4xx says what to do: ``value`` for ``data``,
an execute body without the ``{"input": {...}}`` wrapper, misspelt fields. The error
``code`` stays the protocol's; the hint is in ``error`` / ``details``. Against a live
``agentfield-asgi serve`` on loopback, both backends."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agentfield_asgi.testing import ServerProcess, agent_server

ROOT = Path(__file__).resolve().parents[2]
API = "/api/v1/memory"


@pytest.fixture
def http(live_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server.url, timeout=30) as client:
        yield client


def test_value_instead_of_data_is_named(http: httpx.Client) -> None:
    r = http.post(f"{API}/set", json={"key": "greeting", "value": "hi"})
    assert r.status_code == 400
    assert r.json() == {
        "error": "'data' is required (did you mean 'data' instead of 'value'?)",
        "code": "missing_data",
        "details": {"unknown_fields": ["value"]},
    }
    assert http.post(f"{API}/get", json={"key": "greeting"}).status_code == 404  # nothing stored


def test_missing_data_without_value_keeps_its_message(http: httpx.Client) -> None:
    r = http.post(f"{API}/set", json={"key": "greeting"})
    assert r.status_code == 400
    assert r.json() == {
        "error": "'data' is required (null is a valid value)",
        "code": "missing_data",
        "details": {},
    }


@pytest.mark.parametrize(
    ("route", "body", "status", "code", "unknown"),
    [
        (
            "set",
            {"key": "", "data": 1, "scope_id": "s1", "ttl": 5},
            400,
            "invalid_key",
            ["scope_id", "ttl"],
        ),
        ("get", {"key": "k", "scpoe": "session"}, 404, "not_found", ["scpoe"]),
        ("delete", {"key": 7, "if-version": 1}, 400, "invalid_key", ["if-version"]),
        (
            "set",
            {"key": "k", "data": 1, "scope": "team", "tags": []},
            400,
            "invalid_scope",
            ["tags"],
        ),
        ("incr", {"key": "n", "by": "one", "amount": 1}, 400, "invalid_parameter", ["amount"]),
        ("get_many", {"key": "k"}, 400, "invalid_parameter", ["key"]),
        ("batch", {"operations": []}, 400, "invalid_parameter", ["operations"]),
        ("clear", {"scopes": "global"}, 400, "missing_scope", ["scopes"]),
        ("vector/search", {"embedding": [1.0]}, 400, "invalid_embedding", ["embedding"]),
        ("vector/set", {"key": "v", "vector": [1.0]}, 400, "invalid_embedding", ["vector"]),
    ],
)
def test_a_refused_request_names_its_unknown_fields(
    http: httpx.Client,
    route: str,
    body: dict[str, object],
    status: int,
    code: str,
    unknown: list[str],
) -> None:
    r = http.post(f"{API}/{route}", json=body)
    assert r.status_code == status
    assert set(r.json()) == {"error", "code", "details"}
    assert r.json()["code"] == code
    assert r.json()["details"]["unknown_fields"] == unknown


def test_an_accepted_request_ignores_extra_fields(http: httpx.Client) -> None:
    r = http.post(f"{API}/set", json={"key": "k", "data": 1, "note": "x"})
    assert r.status_code == 200
    assert r.json()["data"] == 1


@pytest.fixture
def support_node(live_server: ServerProcess) -> Iterator[ServerProcess]:
    """The quickstart's support-agent, registered with the live control plane."""
    node = agent_server(
        "examples.support.support_agent:app", live_server.url, cwd=str(ROOT)
    ).start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            nodes = httpx.get(f"{live_server.url}/api/v1/nodes", timeout=30).json()
            if any(n["node_id"] == "support-agent" for n in nodes):
                break
            time.sleep(0.1)
        yield node
    finally:
        node.stop()


def test_execute_without_the_input_wrapper_says_so(
    http: httpx.Client, support_node: ServerProcess
) -> None:
    body = {"ticket_id": "T-1", "text": "the dashboard is slow"}
    http.headers["X-Session-ID"] = "customer-42"  # as the quickstart sends it
    r = http.post("/api/v1/execute/support-agent.handle_ticket", json=body)
    assert r.status_code == 400
    error = r.json()
    assert error["code"] == "execution_failed"  # the protocol's code is unchanged
    assert error["details"]["error_code"] == "invalid_input"
    assert error["error"].endswith(
        '(the body is missing the {"input": {...}} wrapper: '
        'send {"input": {"ticket_id": ..., "text": ...}})'
    )
    # The same call wrapped works, and a wrapped call with a bad argument gets no hint.
    ok = http.post("/api/v1/execute/support-agent.handle_ticket", json={"input": body})
    assert ok.status_code == 200, ok.text
    bad = http.post(
        "/api/v1/execute/support-agent.handle_ticket", json={"input": {"ticket_id": "T-2"}}
    )
    assert bad.status_code == 400
    assert "wrapper" not in bad.json()["error"]
