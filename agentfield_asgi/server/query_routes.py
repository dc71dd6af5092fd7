"""Extension routes ``/api/v1/memory/query`` and ``/api/v1/memory/keys``.

``query``: the records of one scope id under a key prefix whose value matches a
filter (LangGraph's operators), paged by ``offset``/``limit``, filtered by the
server (see :mod:`..store.query`); with ``query_embedding`` ranked by the records'
vectors (``vector_filters`` narrowing them by metadata), each record with a ``score``.
``keys``: key names only under a prefix, paged by an ``after`` key (for listing
namespaces without fetching values).
Both take ``scope`` (required) with its id from the header, as ``list`` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import INVALID_PARAMETER, MISSING_SCOPE, BadRequest
from ..store import query as store_query
from ..store.base import SCOPES
from . import access
from .http import int_param, json_response, parse_scope, read_json_object, request_context
from .http import scope_id_for as _scope_id_for
from .vector_routes import MAX_TOP_K, parse_embedding, parse_filters

if TYPE_CHECKING:
    from .app import MemoryService

MAX_LIMIT = 10_000
MAX_OFFSET = 1_000_000
# The top-level body fields each route reads (a refusal names the others).
QUERY_FIELDS = frozenset(
    {"scope", "prefix", "filter", "limit", "offset", "query_embedding", "vector_filters"}
)
KEYS_FIELDS = frozenset({"scope", "prefix", "after", "limit"})


def _scope(payload: dict[str, Any], request: Request) -> tuple[str, str]:
    scope = parse_scope(payload.get("scope"))
    if scope is None:
        raise BadRequest("'scope' is required", code=MISSING_SCOPE)
    scope_id = _scope_id_for(scope, request_context(request))
    access.current().require("read", scope, scope_id)  # 403 unless the key may read it
    return scope, scope_id


def _text(payload: dict[str, Any], field: str) -> str | None:
    value = payload.get(field)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or "\x00" in value:  # no key holds NUL
        raise BadRequest(
            f"'{field}' must be a string without NUL",
            code=INVALID_PARAMETER,
            details={"field": field},
        )
    return value


def _int(payload: dict[str, Any], field: str, maximum: int, default: int, minimum: int) -> int:
    number = int_param(payload.get(field), field, minimum=minimum, maximum=maximum, default=default)
    assert number is not None
    return number


def routes(service: MemoryService) -> list[Route]:
    settings = service.settings

    async def memory_query(request: Request) -> Response:
        payload = await read_json_object(request, settings, fields=QUERY_FIELDS)
        scope, scope_id = _scope(payload, request)
        flt = store_query.validate_filter(payload.get("filter"))
        prefix = _text(payload, "prefix")
        limit = _int(payload, "limit", MAX_LIMIT, 10, 1)
        offset = _int(payload, "offset", MAX_OFFSET, 0, 0)
        embedding = payload.get("query_embedding")
        store = await service.ready()
        if embedding is None:
            records = await store_query.query(
                store, scope, scope_id, prefix=prefix, flt=flt, limit=limit, offset=offset
            )
            return json_response({"records": [r.to_dict() for r in records]})
        metric = settings.vector_metric
        ranked = await store_query.ranked(
            store,
            scope,
            scope_id,
            parse_embedding(embedding, "query_embedding", metric),
            prefix=prefix,
            flt=flt,
            vector_filters=parse_filters(payload.get("vector_filters")),
            limit=limit,
            offset=offset,
            metric=metric,
            top_k=MAX_TOP_K,
        )
        return json_response({"records": [r.to_dict() | {"score": s} for r, s in ranked]})

    async def memory_keys(request: Request) -> Response:
        payload = await read_json_object(request, settings, fields=KEYS_FIELDS)
        scope, scope_id = _scope(payload, request)
        limit = _int(payload, "limit", MAX_LIMIT, 1000, 1)
        store = await service.ready()
        keys = await store_query.keys(
            store,
            scope,
            scope_id,
            prefix=_text(payload, "prefix"),
            limit=limit,
            after=_text(payload, "after"),
        )
        return json_response({"keys": keys, "next": keys[-1] if len(keys) == limit else None})

    return [
        Route("/memory/query", memory_query, methods=["POST"]),
        Route("/memory/keys", memory_keys, methods=["POST"]),
    ]


def _object(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


def _operation(
    summary: str, body: dict[str, Any], description: str, answer: dict[str, Any]
) -> dict[str, Any]:
    """One POST operation: a JSON body with ``scope`` required, a JSON answer, the errors."""
    return {
        "post": {
            "summary": summary,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _object(["scope"], body)}},
            },
            "responses": {
                "200": {
                    "description": description,
                    "content": {"application/json": {"schema": answer}},
                },
                **{str(s): {"$ref": f"#/components/responses/E{s}"} for s in (400, 401, 503)},
            },
        }
    }


_COMMON = {"scope": {"enum": list(SCOPES)}, "prefix": {"type": "string"}}
_LIMIT = {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}
OPENAPI_PATHS: dict[str, Any] = {
    "/memory/query": _operation(
        "ext: records under a key prefix whose value matches a filter",
        {
            **_COMMON,
            "filter": {"type": "object"},
            "limit": _LIMIT,
            "offset": {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET},
            "query_embedding": {"type": "array", "items": {"type": "number"}},
            "vector_filters": {"type": "object"},
        },
        "matching records in key order (best first, with a score, given query_embedding)",
        _object(
            ["records"],
            {"records": {"type": "array", "items": {"$ref": "#/components/schemas/Record"}}},
        ),
    ),
    "/memory/keys": _operation(
        "ext: key names under a prefix, paged by the last key seen",
        {**_COMMON, "after": {"type": "string"}, "limit": _LIMIT},
        "keys in order; 'next' is the 'after' of the next page",
        _object(
            ["keys", "next"],
            {
                "keys": {"type": "array", "items": {"type": "string"}},
                "next": {"type": ["string", "null"]},
            },
        ),
    ),
}
