"""Protocol extensions: ``/api/v1/memory/{incr,batch,get_many,clear}``.

Same scope rules as the core routes (scope ids from headers, ``scope`` optional
except on ``clear``). Also starts the TTL purger (see :mod:`.ttl`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..context import ExecutionContext
from ..errors import (
    INVALID_OPERATION,
    INVALID_PARAMETER,
    MISSING_SCOPE,
    AgentFieldError,
    BadRequest,
    VersionConflict,
)
from ..settings import Settings
from ..store.base import (
    ClearOp,
    DeleteOp,
    IncrOp,
    Record,
    VectorDeleteOp,
    VectorSetOp,
    WriteOp,
)
from . import access
from .http import (
    event_metadata,
    json_response,
    parse_scope,
    raw_json_response,
    read_chain,
    read_json_object,
    request_context,
    scope_id_for,
    target_scope,
    validate_key,
)
from .memory_routes import delete_op_from, set_op_from
from .ttl import start_purger
from .vector_routes import vector_delete_op_from, vector_set_op_from

if TYPE_CHECKING:
    from .app import MemoryService

MAX_INCR_STEP = 2**53  # exact in every JSON reader, including JavaScript's


def _increment(value: Any) -> int | float:
    if value is None:
        return 1
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest("'by' must be a number", code=INVALID_PARAMETER, details={"field": "by"})
    if not (math.isfinite(value) and abs(value) <= MAX_INCR_STEP):
        raise BadRequest(
            f"'by' must be a finite number of magnitude at most {MAX_INCR_STEP}",
            code=INVALID_PARAMETER,
            details={"field": "by"},
        )
    return value


def incr_op_from(payload: dict[str, Any], ctx: ExecutionContext, settings: Settings) -> IncrOp:
    key = validate_key(payload.get("key"), settings)
    scope, scope_id = target_scope(parse_scope(payload.get("scope")), ctx)
    return IncrOp(scope, scope_id, key, _increment(payload.get("by")), event_metadata(ctx))


OpParser = Callable[[dict[str, Any], ExecutionContext, Settings], WriteOp]
_BATCH_PARSERS: dict[str, OpParser] = {
    "set": set_op_from,
    "delete": delete_op_from,
    "incr": incr_op_from,
    "vector_set": vector_set_op_from,
    "vector_delete": vector_delete_op_from,
}


def _bounded_array(payload: dict[str, Any], field: str, limit: int, *, what: str) -> list[Any]:
    """``payload[field]`` as an array of at most ``limit`` items (400 otherwise)."""
    items = payload.get(field)
    if not isinstance(items, list):
        raise BadRequest(f"'{field}' must be an array", code=INVALID_PARAMETER)
    if len(items) > limit:
        raise BadRequest(
            f"at most {limit} {what} per request",
            code=f"too_many_{what}",
            details={"max": limit, "given": len(items)},
        )
    return items


def _batch_ops(payload: dict[str, Any], ctx: ExecutionContext, settings: Settings) -> list[WriteOp]:
    items = _bounded_array(payload, "ops", settings.max_batch_ops, what="operations")
    if not items:
        raise BadRequest("'ops' must not be empty", code=INVALID_PARAMETER)
    ops: list[WriteOp] = []
    for index, item in enumerate(items):
        kind = item.get("op") if isinstance(item, dict) else None
        parse = _BATCH_PARSERS.get(kind) if isinstance(kind, str) else None
        if parse is None:
            raise BadRequest(
                f"each operation is an object with 'op' one of {', '.join(_BATCH_PARSERS)}",
                code=INVALID_OPERATION,
                details={"index": index},
            )
        try:
            ops.append(parse(item, ctx, settings))
        except AgentFieldError as exc:
            exc.details = {**exc.details, "index": index}
            raise
    return ops


def _failed_index(ops: list[WriteOp], exc: AgentFieldError) -> int | None:
    """Which op a store error came from: the first that can fail so on that key."""
    key = exc.details.get("key")
    for index, op in enumerate(ops):
        if getattr(op, "key", None) != key:
            continue
        if isinstance(exc, VersionConflict) and getattr(op, "if_version", None) is None:
            continue
        if not isinstance(exc, VersionConflict) and not isinstance(op, IncrOp):
            continue
        return index
    return None


def _batch_result(op: WriteOp, result: Any) -> Any:
    if isinstance(op, VectorSetOp):
        return result.to_dict()
    if isinstance(op, DeleteOp | VectorDeleteOp):
        return {
            "key": op.key,
            "scope": op.scope,
            "scope_id": op.scope_id,
            "deleted": result is True if isinstance(op, VectorDeleteOp) else result is not None,
        }
    assert isinstance(result, Record)
    return result.to_dict()


# The top-level body fields each route reads (a refusal names the others).
INCR_FIELDS = frozenset({"key", "scope", "by"})
BATCH_FIELDS = frozenset({"ops"})
GET_MANY_FIELDS = frozenset({"keys", "scope"})
CLEAR_FIELDS = frozenset({"scope"})


def routes(service: MemoryService) -> list[Route]:
    settings = service.settings
    service.on_start(lambda: start_purger(service))

    async def memory_incr(request: Request) -> Response:
        payload = await read_json_object(request, settings, fields=INCR_FIELDS)
        op = incr_op_from(payload, request_context(request), settings)
        store = await service.ready()
        record = (await store.write([op]))[0]
        return raw_json_response(record.to_json(), headers={"ETag": f'"{record.version}"'})

    async def memory_batch(request: Request) -> Response:
        payload = await read_json_object(
            request, settings, settings.max_batch_bytes, fields=BATCH_FIELDS
        )
        ops = _batch_ops(payload, request_context(request), settings)
        store = await service.ready()
        try:
            results = await store.write(ops)
        except AgentFieldError as exc:
            if exc.status < 500:
                index = _failed_index(ops, exc)
                exc.details = {**exc.details, "index": index, "applied": False}
            raise
        return json_response(
            {"results": [_batch_result(o, r) for o, r in zip(ops, results, strict=True)]}
        )

    async def memory_get_many(request: Request) -> Response:
        payload = await read_json_object(request, settings, fields=GET_MANY_FIELDS)
        keys = _bounded_array(payload, "keys", settings.max_batch_ops, what="keys")
        wanted = list(dict.fromkeys(validate_key(k, settings, "keys[]") for k in keys))
        chain = read_chain(parse_scope(payload.get("scope")), request_context(request))
        store = await service.ready()
        found = await store.get_many(wanted, chain) if wanted else {}
        return json_response(
            {
                "records": {k: found[k].to_dict() for k in wanted if k in found},
                "missing": [k for k in wanted if k not in found],
            }
        )

    async def memory_clear(request: Request) -> Response:
        payload = await read_json_object(request, settings, fields=CLEAR_FIELDS)
        scope = parse_scope(payload.get("scope"))
        if scope is None:
            raise BadRequest("'scope' is required: clear acts on one scope id", code=MISSING_SCOPE)
        ctx = request_context(request)
        scope_id = scope_id_for(scope, ctx)
        access.current().require_admin("clearing a scope")
        store = await service.ready()
        count = (await store.write([ClearOp(scope, scope_id, event_metadata(ctx))]))[0]
        return json_response({"scope": scope, "scope_id": scope_id, "deleted": count})

    return [
        Route("/memory/incr", memory_incr, methods=["POST"]),
        Route("/memory/batch", memory_batch, methods=["POST"]),
        Route("/memory/get_many", memory_get_many, methods=["POST"]),
        Route("/memory/clear", memory_clear, methods=["POST"]),
    ]
