"""``GET /api/v1/ready``: readiness, for load balancers and Kubernetes probes.

``/api/v1/health`` is liveness (the process answers). Readiness is stricter: 200 only
when the storage answers a query within :data:`CHECK_TIMEOUT_SECONDS`, its schema holds
every migration this package knows, and the writer (SQLite's writer process or thread,
PostgreSQL's group-commit task) is alive. Otherwise 503 with the error body, its
``details.checks`` saying which check failed and why. No API key needed: the answer
holds no memory data.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import AgentFieldError, NotReady
from ..store.base import Store
from ..store.schema import SCHEMA_VERSION
from .http import json_response
from .routes import Served

if TYPE_CHECKING:
    from .app import MemoryService

CHECK_TIMEOUT_SECONDS = 2.0
"""A probe must answer quickly: storage slower than this counts as not answering."""


async def readiness(store: Store) -> dict[str, str]:
    """Each check's outcome: ``"ok"`` or why it failed (``storage``, ``schema``, ``writer``)."""
    checks = {"storage": "ok", "schema": "ok", "writer": "ok"}
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
            version = await store.schema_version()
    except TimeoutError:
        checks["storage"] = f"no answer within {CHECK_TIMEOUT_SECONDS:g}s"
        checks["schema"] = "unknown"
    except AgentFieldError as exc:
        checks["storage"] = exc.message
        checks["schema"] = "unknown"
    else:
        if version < SCHEMA_VERSION:
            checks["schema"] = f"version {version} applied, {SCHEMA_VERSION} expected"
    problem = store.writer_problem()
    if problem is not None:
        checks["writer"] = problem
    return checks


def routes(service: MemoryService) -> list[Served]:
    async def ready(request: Request) -> Response:
        store = await service.ready()
        checks = await readiness(store)
        failed = {name: why for name, why in checks.items() if why != "ok"}
        if failed:
            reason = "; ".join(f"{name}: {why}" for name, why in failed.items())
            raise NotReady(f"not ready: {reason}", details={"checks": checks})
        body: dict[str, Any] = {"status": "ready", "storage": store.kind, "checks": checks}
        return json_response(body)

    return [Served(Route("/ready", ready, methods=["GET"]), public=True)]


OPENAPI_PATHS: dict[str, Any] = {
    "/ready": {
        "get": {
            "summary": "readiness: storage answers, schema migrated, writer alive (no API key)",
            "security": [],
            "responses": {
                "200": {
                    "description": "ready",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                "503": {"$ref": "#/components/responses/E503"},
            },
        }
    }
}
