"""``/api/v1/memory/vector/{set,delete,search}``: HTTP <-> Store, per the protocol.

Scope rules are the key-value ones, except that a search is never hierarchical:
an unscoped call (set, delete or search) acts on the scope an unscoped write uses.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..context import ExecutionContext
from ..errors import INVALID_FILTERS, INVALID_PARAMETER, BadRequest, InvalidEmbedding
from ..settings import Settings
from ..store.base import VectorDeleteOp, VectorSetOp
from ..store.vector_index import METRICS, limit_blas_threads
from .http import (
    encode_value,
    event_metadata,
    json_response,
    parse_scope,
    read_json_object,
    request_context,
    target_scope,
    validate_key,
)

log = logging.getLogger("agentfield_asgi.server")

if TYPE_CHECKING:
    from .app import MemoryService

MAX_DIMENSION = 16_000  # pgvector's limit for its ``vector`` type
MAX_COMPONENT = 1e15  # keeps float32 dot products and norms far from overflow
DEFAULT_TOP_K = 10
MAX_TOP_K = 1000
MAX_FILTERS = 32


_NUMBER_TYPES = frozenset((float, int))  # exact types: bool, an int subclass, is not a number


def parse_embedding(value: Any, name: str, metric: str) -> np.ndarray:
    """A JSON array of finite numbers -> float32 vector (400 ``invalid_embedding`` otherwise)."""
    if not isinstance(value, list) or not value:
        raise InvalidEmbedding(
            f"'{name}' must be a non-empty array of numbers", details={"field": name}
        )
    if len(value) > MAX_DIMENSION:
        raise InvalidEmbedding(
            f"'{name}' has {len(value)} dimensions; at most {MAX_DIMENSION} are allowed",
            details={"field": name, "max_dimension": MAX_DIMENSION},
        )
    if not _NUMBER_TYPES.issuperset(map(type, value)):  # one pass in C; bool is refused
        i, x = next((i, x) for i, x in enumerate(value) if type(x) not in _NUMBER_TYPES)
        raise InvalidEmbedding(
            f"'{name}' must contain only numbers; item {i} is {type(x).__name__}",
            details={"field": name, "index": i},
        )
    try:
        array = np.array(value, dtype=np.float64)
    except OverflowError:
        array = np.array([np.inf])
    largest = float(np.abs(array).max())
    if not largest <= MAX_COMPONENT:
        raise InvalidEmbedding(
            f"'{name}' components must be finite numbers of magnitude at most {MAX_COMPONENT:g}",
            details={"field": name},
        )
    if largest == 0.0 and metric == "cosine":
        raise InvalidEmbedding(
            f"'{name}' is the zero vector, which has no direction for cosine similarity",
            details={"field": name},
        )
    return array.astype(np.float32)


def parse_top_k(value: Any) -> int:
    if value is None:
        return DEFAULT_TOP_K
    if type(value) is not int or not 1 <= value <= MAX_TOP_K:
        raise BadRequest(
            f"'top_k' must be an integer between 1 and {MAX_TOP_K}",
            code=INVALID_PARAMETER,
            details={"parameter": "top_k", "min": 1, "max": MAX_TOP_K},
        )
    return value


def parse_filters(value: Any) -> dict[str, Any] | None:
    """``{metadata field: value}`` matched by JSON equality; ``{}`` and null mean no filter."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BadRequest(
            "'filters' must be an object mapping metadata fields to values", code=INVALID_FILTERS
        )
    if len(value) > MAX_FILTERS:
        raise BadRequest(f"at most {MAX_FILTERS} filters are allowed", code=INVALID_FILTERS)
    for field, expected in value.items():
        if not field:
            raise BadRequest("filter field names must not be empty", code=INVALID_FILTERS)
        if (
            isinstance(expected, dict)
            and expected
            and all(str(k).startswith("$") for k in expected)
        ):
            raise BadRequest(
                f"filter on {field!r} uses operators {sorted(expected)}; filters match metadata "
                "fields by equality only",
                code=INVALID_FILTERS,
                details={"field": field},
            )
    return value or None


def parse_metadata(value: Any, settings: Settings) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest("'metadata' must be an object", code=INVALID_PARAMETER)
    encode_value(value, settings)  # same size, depth and NUL rules as stored values
    return value


# The top-level body fields each route reads (a refusal names the others).
VECTOR_SET_FIELDS = frozenset({"key", "embedding", "metadata", "scope"})
VECTOR_DELETE_FIELDS = frozenset({"key", "scope"})
VECTOR_SEARCH_FIELDS = frozenset({"query_embedding", "top_k", "filters", "scope"})


# The two vector writes as ops, shared by their routes and by /memory/batch (ext).


def vector_set_op_from(
    payload: dict[str, Any], ctx: ExecutionContext, settings: Settings
) -> VectorSetOp:
    """A validated :class:`VectorSetOp` from a vector set body (also one op of a batch)."""
    key = validate_key(payload.get("key"), settings)
    embedding = parse_embedding(payload.get("embedding"), "embedding", settings.vector_metric)
    metadata = parse_metadata(payload.get("metadata"), settings)
    scope, scope_id = target_scope(parse_scope(payload.get("scope")), ctx)
    return VectorSetOp(scope, scope_id, key, embedding, metadata, event_metadata(ctx))


def vector_delete_op_from(
    payload: dict[str, Any], ctx: ExecutionContext, settings: Settings
) -> VectorDeleteOp:
    """A validated :class:`VectorDeleteOp` from a vector delete body (also one op of a batch)."""
    key = validate_key(payload.get("key"), settings)
    scope, scope_id = target_scope(parse_scope(payload.get("scope")), ctx)
    return VectorDeleteOp(scope, scope_id, key, event_metadata(ctx))


def routes(service: MemoryService) -> list[Route]:
    settings = service.settings
    metric = settings.vector_metric
    if metric not in METRICS:
        raise ValueError(f"vector_metric must be one of {', '.join(METRICS)}, not {metric!r}")

    service.store.vector_metric = metric  # before the store opens
    undo: list[Callable[[], None]] = []

    def start() -> None:
        undo.append(limit_blas_threads(settings.vector_blas_threads))
        log.info("vector search: %s, metric %s", service.store.vector_mode, metric)

    def stop() -> None:
        while undo:
            undo.pop()()

    service.on_start(start)
    service.on_stop(stop)

    async def vector_set(request: Request) -> Response:
        payload = await read_json_object(request, settings, fields=VECTOR_SET_FIELDS)
        op = vector_set_op_from(payload, request_context(request), settings)
        store = await service.ready()
        record = (await store.write([op]))[0]
        return json_response(record.to_dict())

    async def vector_delete(request: Request) -> Response:
        payload = await read_json_object(request, settings, fields=VECTOR_DELETE_FIELDS)
        op = vector_delete_op_from(payload, request_context(request), settings)
        store = await service.ready()
        await store.write([op])
        return Response(status_code=204)

    async def vector_search(request: Request) -> Response:
        payload = await read_json_object(request, settings, fields=VECTOR_SEARCH_FIELDS)
        query = parse_embedding(payload.get("query_embedding"), "query_embedding", metric)
        top_k = parse_top_k(payload.get("top_k"))
        filters = parse_filters(payload.get("filters"))
        scope, scope_id = target_scope(
            parse_scope(payload.get("scope")), request_context(request), action="read"
        )
        store = await service.ready()
        hits = await store.vector_search(
            scope, scope_id, query, top_k=top_k, filters=filters, metric=metric
        )
        return json_response([hit.to_dict() for hit in hits])

    return [
        Route("/memory/vector/set", vector_set, methods=["POST"]),
        Route("/memory/vector/delete", vector_delete, methods=["POST"]),
        Route("/memory/vector/search", vector_search, methods=["POST"]),
    ]
