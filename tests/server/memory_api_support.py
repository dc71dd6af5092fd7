"""Helpers shared by the memory API tests: scope headers and a snapshot of stored state."""

from __future__ import annotations

import re
from typing import Any

from agentfield_asgi.server.app import MemoryService

HEADER = {"workflow": "X-Workflow-ID", "session": "X-Session-ID", "actor": "X-Actor-ID"}
IDS = {"workflow": "wf-1a2b", "session": "sess-1", "actor": "actor-1", "global": "global"}
CHAIN = ("workflow", "session", "actor", "global")
RFC3339_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
ERROR_KEYS = {"error", "code", "details"}


def headers_for(*scopes: str, **ids: str) -> dict[str, str]:
    """Scope headers for the named scopes (ids from IDS unless given)."""
    return {HEADER[s]: ids.get(s, IDS[s]) for s in scopes if s != "global"}


def assert_error(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    """``response`` is the protocol's error body with this status (and code)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == ERROR_KEYS, body
    assert isinstance(body["error"], str) and body["error"]
    assert isinstance(body["details"], dict)
    if code is not None:
        assert body["code"] == code, body
    return dict(body)


async def snapshot(service: MemoryService) -> tuple[Any, ...]:
    """Everything a request could change: every stored record and the newest event id."""
    store = service.store
    records = []
    for summary in await store.scopes():
        for r in await store.list(summary.scope, summary.scope_id):
            records.append((r.scope, r.scope_id, r.key, r.data_json, r.version, r.updated_us))
    return (sorted(records), await store.last_event_id())
