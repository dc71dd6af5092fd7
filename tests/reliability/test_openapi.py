"""``/api/v1/openapi.json`` describes every route the app serves, and is valid OpenAPI."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import schemathesis

import agentfield_asgi
from agentfield_asgi.errors import error_codes
from agentfield_asgi.server.app import MemoryService, create_memory_app
from agentfield_asgi.server.openapi import PATHS, served_api_routes


async def test_every_served_route_is_described(
    client: httpx.AsyncClient, service: MemoryService
) -> None:
    r = await client.get("/api/v1/openapi.json")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    doc = r.json()
    assert doc["openapi"].startswith("3.1")
    served = served_api_routes(service)
    missing = []
    for path, methods in served.items():
        item = doc["paths"].get("/api/v1" + path)
        if item is None:
            missing.append(path)
            continue
        for method in methods:
            if method not in ("WS", "OPTIONS") and method.lower() not in item:
                missing.append(f"{method} {path}")
    assert not missing, f"served but not described in server/openapi.py: {missing}"
    # Only served paths are listed (descriptions of routes this app lacks are left out).
    assert {p.removeprefix("/api/v1") for p in doc["paths"]} <= set(served)
    assert "/memory/incr" in served and "/memory/set" in served


def test_document_is_valid_openapi(tmp_path) -> None:  # type: ignore[no-untyped-def]
    service = create_memory_app(f"sqlite:///{tmp_path / 'm.db'}", api_keys=("k",))
    schema = schemathesis.openapi.from_asgi(
        "/api/v1/openapi.json", service.app, headers={"X-API-Key": "k"}
    )
    schema.validate()
    assert schema.raw_schema["security"] == [{"apiKeyHeader": []}, {"bearer": []}]
    from schemathesis.python import asgi

    asgi.shutdown_lifespans()


def test_protocol_routes_have_descriptions() -> None:
    protocol = {
        "/memory/set", "/memory/get", "/memory/delete", "/memory/list",
        "/memory/events/ws", "/memory/events/sse", "/memory/events/history",
        "/memory/vector/set", "/memory/vector/delete", "/memory/vector/search",
        "/memory/incr", "/memory/batch", "/memory/get_many", "/memory/clear", "/health",
    }  # fmt: skip
    assert protocol <= set(PATHS)


async def test_error_codes_come_from_their_one_definition(client: httpx.AsyncClient) -> None:
    """The error body's ``code`` lists every code the service can send, taken from
    ``errors.py``; no module spells a code itself (``code="..."``), so none is missed."""
    doc = (await client.get("/api/v1/openapi.json")).json()
    listed = doc["components"]["schemas"]["Error"]["properties"]["code"]["examples"]
    assert listed == error_codes()
    assert {"invalid_parameter", "forbidden", "execution_not_found", "not_ready"} <= set(listed)
    package = Path(agentfield_asgi.__file__).parent
    spelled = [
        f"{path.relative_to(package)}: {match.group(0)}"
        for path in package.rglob("*.py")
        if path.name != "errors.py"
        for match in re.finditer(
            r"""code=["'][a-z_]+["']|["']code["']: ["'][a-z_]+["']""", path.read_text()
        )
    ]
    assert spelled == [], "error codes spelled outside errors.py"
