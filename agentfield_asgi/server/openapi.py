"""``GET /api/v1/openapi.json``: a hand-written OpenAPI 3.1 description of the service.

Written by hand (not derived from code) so it states the contract of PROTOCOL.md
and our extensions; scopes and header names come from their one definition
(``store/base.py``, ``context.py``). The document served lists only the paths this app actually
routes; a route module may describe its own routes by defining ``OPENAPI_PATHS``
(path relative to ``/api/v1`` -> path item), merged over the ones here. A test
checks that every served route is described.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute

from ..context import (
    HEADER_ACTOR_ID,
    HEADER_AGENT_NODE_ID,
    HEADER_API_KEY,
    HEADER_RUN_ID,
    HEADER_SESSION_ID,
    HEADER_WORKFLOW_ID,
)
from ..errors import error_codes
from ..store.base import SCOPES
from .routes import API_PREFIX

if TYPE_CHECKING:
    from .app import MemoryService

# ---------------------------------------------------------------- building blocks

ANY: dict[str, Any] = {}  # any JSON value, null included (JSON Schema 2020-12)
SCOPE = {"type": "string", "enum": list(SCOPES)}
KEY = {"type": "string", "minLength": 1, "description": "at most 1,024 UTF-8 bytes, no NUL"}
VERSION = {"type": "integer", "minimum": 0}
TIMESTAMP = {"type": "string", "description": "RFC 3339 UTC with a Z suffix"}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(required: list[str], **props: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": props}


def _json(schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    return {
        "description": description or "JSON",
        "content": {"application/json": {"schema": schema}},
    }


def _responses(ok: dict[str, Any], *errors: int) -> dict[str, Any]:
    out = dict(ok)
    for status in (*errors, 401, 503):
        out[str(status)] = {"$ref": f"#/components/responses/E{status}"}
    return out


SCOPE_HEADERS = [
    {"$ref": f"#/components/parameters/{name}"}
    for name in ("WorkflowID", "SessionID", "ActorID", "RunID", "AgentNodeID")
]


def _post(summary: str, body: dict[str, Any], ok: dict[str, Any], *errors: int) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "parameters": SCOPE_HEADERS,
            "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
            "responses": _responses(ok, 400, 413, *errors),
        }
    }


def _path_param(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1},
    }


def _query(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


EVENT_QUERY = [
    _query("patterns", {"type": "string"}, "comma-separated glob patterns (none: every key)"),
    _query("scope", SCOPE),
    _query("scope_id", {"type": "string"}),
]

# ---------------------------------------------------------------- the document

COMPONENTS: dict[str, Any] = {
    "schemas": {
        "Error": _obj(
            ["error", "code", "details"],
            error={"type": "string"},
            code={"type": "string", "examples": error_codes()},
            details={"type": "object"},
        ),
        "Record": _obj(
            ["scope", "scope_id", "key", "data", "created_at", "updated_at", "metadata", "version"],
            scope=SCOPE,
            scope_id={"type": "string"},
            key={"type": "string"},
            data=ANY,
            access_level={"type": "string"},
            created_at=TIMESTAMP,
            updated_at=TIMESTAMP,
            metadata={"type": "object"},
            version={"type": "integer", "minimum": 1},
            expires_at=TIMESTAMP,
        ),
        "Event": _obj(
            ["id", "type", "timestamp", "scope", "scope_id", "key", "action", "data", "metadata"],
            id={"type": "string", "pattern": "^[0-9]+$"},
            type={"const": "memory_change"},
            timestamp=TIMESTAMP,
            scope={"type": "string"},
            scope_id={"type": "string"},
            key={"type": "string"},
            action={"type": "string"},
            data=ANY,
            previous_data=ANY,
            metadata={"type": "object"},
        ),
    },
    "responses": {
        f"E{status}": _json(_ref("Error"), reason)
        for status, reason in {
            400: "bad input",
            401: "missing or invalid API key",
            404: "not found",
            409: "the execution has already ended; its first outcome stands",
            412: "if_version did not match; details.current holds the current record (or null)",
            413: "request body or value too large",
            429: "too many subscriptions from this client",
            501: "an AgentField feature this service does not provide",
            502: "the agent node could not be reached, or its reasoner failed",
            503: "storage unavailable (retry later)",
            504: "the execution had no outcome within its deadline",
        }.items()
    },
    "parameters": {
        name: {"name": header, "in": "header", "required": False, "schema": {"type": "string"}}
        for name, header in {
            "WorkflowID": HEADER_WORKFLOW_ID,
            "SessionID": HEADER_SESSION_ID,
            "ActorID": HEADER_ACTOR_ID,
            "RunID": HEADER_RUN_ID,
            "AgentNodeID": HEADER_AGENT_NODE_ID,
        }.items()
    },
    "securitySchemes": {
        "apiKeyHeader": {"type": "apiKey", "in": "header", "name": HEADER_API_KEY},
        "bearer": {"type": "http", "scheme": "bearer"},
        "apiKeyQuery": {
            "type": "apiKey",
            "in": "query",
            "name": "api_key",
            "description": "accepted on the event streams only",
        },
    },
}

_SET_FIELDS = {
    "key": KEY,
    "data": ANY,
    "scope": SCOPE,
    "metadata": {"type": "object"},
    "if_version": {**VERSION, "description": "ext: 0 = only if absent"},
    "ttl_seconds": {"type": "number", "exclusiveMinimum": 0, "maximum": 315360000},
}
_DELETE_FIELDS = {"key": KEY, "scope": SCOPE, "if_version": VERSION}
_INCR_FIELDS = {"key": KEY, "by": {"type": "number"}, "scope": SCOPE}
_VECTOR_FIELDS = {
    "key": KEY,
    "embedding": {"type": "array", "items": {"type": "number"}, "minItems": 1},
    "metadata": {"type": "object"},
    "scope": SCOPE,
}
_RECORD_OK = {"200": _json(_ref("Record"), "the record")}
_STREAM_OK = {"200": {"description": "text/event-stream", "content": {"text/event-stream": {}}}}

PATHS: dict[str, dict[str, Any]] = {
    "/health": {
        "get": {
            "summary": "liveness and storage kind (no API key needed)",
            "security": [],
            "responses": {
                "200": _json({"type": "object"}),
                "503": {"$ref": "#/components/responses/E503"},
            },
        }
    },
    "/openapi.json": {
        "get": {
            "summary": "this document",
            "responses": _responses({"200": _json({"type": "object"})}),
        }
    },
    "/memory/set": _post(
        "store a value (ext: if_version / If-Match, ttl_seconds, metadata)",
        {**_obj(["key", "data"], **_SET_FIELDS)},
        _RECORD_OK,
        412,
    ),
    "/memory/get": _post(
        "read a key (hierarchically when unscoped)",
        _obj(["key"], key=KEY, scope=SCOPE),
        _RECORD_OK,
        404,
    ),
    "/memory/delete": _post(
        "delete a key (204 also when absent)",
        _obj(["key"], **_DELETE_FIELDS),
        {"204": {"description": "deleted"}},
        412,
    ),
    "/memory/list": {
        "get": {
            "summary": "records of one scope, by key (ext: prefix, pattern, limit, cursor)",
            "parameters": [
                *SCOPE_HEADERS,
                {**_query("scope", SCOPE), "required": True},
                _query("prefix", {"type": "string"}),
                _query("pattern", {"type": "string"}, "glob pattern"),
                _query("limit", {"type": "integer", "minimum": 1, "maximum": 10000}),
                _query("cursor", {"type": "string"}, "X-Next-Cursor of the previous page"),
            ],
            "responses": _responses(
                {"200": _json({"type": "array", "items": _ref("Record")})}, 400
            ),
        }
    },
    "/memory/incr": _post(
        "ext: atomically add 'by' (default 1) to a number (absent counts as 0)",
        _obj(["key"], **_INCR_FIELDS),
        _RECORD_OK,
    ),
    "/memory/batch": _post(
        "ext: many set/delete/incr operations in one transaction, all or nothing",
        _obj(
            ["ops"],
            ops={
                "type": "array",
                "minItems": 1,
                "items": {
                    "oneOf": [
                        _obj(["op", "key", "data"], op={"const": "set"}, **{**_SET_FIELDS}),
                        _obj(["op", "key"], op={"const": "delete"}, **_DELETE_FIELDS),
                        _obj(["op", "key"], op={"const": "incr"}, **_INCR_FIELDS),
                        _obj(
                            ["op", "key", "embedding"],
                            op={"const": "vector_set"},
                            **_VECTOR_FIELDS,
                        ),
                        _obj(["op", "key"], op={"const": "vector_delete"}, key=KEY, scope=SCOPE),
                    ]
                },
            },
        ),
        {"200": _json(_obj(["results"], results={"type": "array"}), "one result per op, in order")},
        412,
    ),
    "/memory/get_many": _post(
        "ext: read many keys in one round trip (hierarchically when unscoped)",
        _obj(["keys"], keys={"type": "array", "items": KEY}, scope=SCOPE),
        {
            "200": _json(
                _obj(
                    ["records", "missing"],
                    records={"type": "object", "additionalProperties": _ref("Record")},
                    missing={"type": "array", "items": {"type": "string"}},
                )
            )
        },
    ),
    "/memory/clear": _post(
        "ext: delete every key of one scope id (one delete event per key)",
        _obj(["scope"], scope=SCOPE),
        {
            "200": _json(
                _obj(
                    ["scope", "scope_id", "deleted"],
                    scope=SCOPE,
                    scope_id={"type": "string"},
                    deleted={"type": "integer", "minimum": 0},
                )
            )
        },
    ),
    "/memory/events/history": {
        "get": {
            "summary": "past events, oldest first (ext: since_id pages forward)",
            "parameters": [
                *EVENT_QUERY,
                _query("since", {"type": "string"}, "RFC 3339"),
                _query("since_id", {"type": "string"}),
                _query("limit", {"type": "integer", "minimum": 1}),
            ],
            "responses": _responses({"200": _json({"type": "array", "items": _ref("Event")})}, 400),
        }
    },
    "/memory/events/sse": {
        "get": {
            "summary": "live events as Server-Sent Events (resume with Last-Event-ID)",
            "security": [{"apiKeyHeader": []}, {"bearer": []}, {"apiKeyQuery": []}],
            "parameters": [*EVENT_QUERY, _query("since_id", {"type": "string"})],
            "responses": _responses(_STREAM_OK, 400, 429),
        }
    },
    "/memory/events/ws": {
        "get": {
            "summary": "live events over a WebSocket (one event object per text frame)",
            "security": [{"apiKeyHeader": []}, {"bearer": []}, {"apiKeyQuery": []}],
            "parameters": [*EVENT_QUERY, _query("since_id", {"type": "string"})],
            "responses": {"101": {"description": "switching protocols"}},
        }
    },
    "/workflows/{workflow_id}/complete": {
        "post": {
            "summary": "ext: mark a workflow finished (its workflow memory is then removed)",
            "parameters": [_path_param("workflow_id")],
            "requestBody": {
                "required": False,
                "content": {
                    "application/json": {
                        "schema": _obj(
                            [], status={"enum": ["succeeded", "failed"]}, error={"type": "string"}
                        )
                    }
                },
            },
            "responses": _responses({"200": _json({"type": "object"})}, 400, 404, 413),
        }
    },
    "/workflows/{workflow_id}": {
        "get": {
            "summary": "ext: a workflow, its status and executions",
            "parameters": [_path_param("workflow_id")],
            "responses": _responses({"200": _json({"type": "object"})}, 404),
        }
    },
    "/memory/vector/set": _post(
        "store an embedding",
        _obj(["key", "embedding"], **_VECTOR_FIELDS),
        {"200": _json({"type": "object"})},
    ),
    "/memory/vector/delete": _post(
        "delete an embedding",
        _obj(["key"], key=KEY, scope=SCOPE),
        {"200": _json({"type": "object"}), "204": {"description": "deleted"}},
    ),
    "/memory/vector/search": _post(
        "nearest embeddings of one scope, best first",
        _obj(
            ["query_embedding"],
            query_embedding={"type": "array", "items": {"type": "number"}, "minItems": 1},
            top_k={"type": "integer", "minimum": 1},
            filters={"type": "object"},
            scope=SCOPE,
        ),
        {"200": _json({"type": "array"})},
    ),
}


def _served_paths(routes: list[BaseRoute], prefix: str = "") -> dict[str, set[str]]:
    """Path -> methods ("WS" for WebSocket routes) the app routes, relative to /api/v1."""
    out: dict[str, set[str]] = {}
    for route in routes:
        if isinstance(route, Mount):
            for path, methods in _served_paths(list(route.routes), prefix + route.path).items():
                out.setdefault(path, set()).update(methods)
        elif isinstance(route, Route):
            out.setdefault(prefix + route.path, set()).update(
                m for m in route.methods or () if m != "HEAD"
            )
        elif isinstance(route, WebSocketRoute):
            out.setdefault(prefix + route.path, set()).add("WS")
    return out


def served_api_routes(service: MemoryService) -> dict[str, set[str]]:
    """``/api/v1`` routes of ``service`` (path relative to ``/api/v1`` -> methods)."""
    return _served_paths(list(service.api_routes))


def build_document(service: MemoryService) -> dict[str, Any]:
    """The OpenAPI document for the routes ``service`` serves."""
    described = {**PATHS, **service.route_table.openapi_paths}
    served = served_api_routes(service)
    paths = {API_PREFIX + p: item for p, item in described.items() if p in served}
    security: list[dict[str, list[str]]] = []
    if service.settings.api_keys:
        security = [{"apiKeyHeader": []}, {"bearer": []}]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "agentfield-asgi memory service",
            "version": _package_version(),
            "description": "AgentField-compatible shared memory with change events. "
            f"Scope ids come from the {HEADER_WORKFLOW_ID} / {HEADER_SESSION_ID} / "
            f"{HEADER_ACTOR_ID} headers.",
        },
        "paths": paths,
        "components": COMPONENTS,
        "security": security,
    }


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("agentfield-asgi")
    except PackageNotFoundError:
        return "0"


def routes(service: MemoryService) -> list[Route]:
    cache: dict[str, bytes] = {}

    async def openapi(request: Request) -> Response:
        if "doc" not in cache:
            from ..codec import dumps

            cache["doc"] = dumps(build_document(service))
        return Response(cache["doc"], media_type="application/json")

    return [Route("/openapi.json", openapi, methods=["GET"])]


__all__ = ["PATHS", "build_document", "routes", "served_api_routes"]
