"""``/api/v1/memory/{set,get,delete,list}``: HTTP <-> Store, per the protocol."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..context import ExecutionContext
from ..errors import BadRequest, NotFound
from ..patterns import compile_pattern
from ..settings import Settings
from ..store.base import DeleteOp, Record, SetOp
from .http import (
    encode_value,
    event_metadata,
    int_param,
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

if TYPE_CHECKING:
    from .app import MemoryService


def _optional_version(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadRequest("'if_version' must be a non-negative integer", code="invalid_parameter")
    return value


def _if_match(request: Request) -> int | None:
    header = request.headers.get("if-match")
    if header is None:
        return None
    try:
        return _optional_version(int(header.strip().strip('"').removeprefix("W/").strip('"')))
    except ValueError:
        raise BadRequest(
            "If-Match must be a record version number", code="invalid_parameter"
        ) from None


def _ttl(value: object) -> float | None:
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not 0 < value <= 10 * 365 * 86400
    ):
        raise BadRequest(
            "'ttl_seconds' must be a positive number of seconds", code="invalid_parameter"
        )
    return float(value)


# The operations behind the routes, also called directly by the SDK's in-process
# transport (same validation, no HTTP): each takes the parsed body/query and the context.


def set_op_from(
    payload: dict[str, Any], ctx: ExecutionContext, settings: Settings, if_match: int | None = None
) -> SetOp:
    """A validated :class:`SetOp` from a set request body (also one op of a batch)."""
    key = validate_key(payload.get("key"), settings)
    if "data" not in payload:
        raise BadRequest("'data' is required (null is a valid value)", code="missing_data")
    data_json = encode_value(payload["data"], settings)
    scope, scope_id = target_scope(parse_scope(payload.get("scope")), ctx)
    metadata = payload.get("metadata")
    if metadata is None:
        metadata = {}
    elif not isinstance(metadata, dict):
        raise BadRequest("'metadata' must be an object", code="invalid_parameter")
    if_version = _optional_version(payload.get("if_version"))
    return SetOp(
        scope,
        scope_id,
        key,
        data_json,
        event_metadata=event_metadata(ctx),
        metadata=metadata,
        if_version=if_match if if_version is None else if_version,
        ttl_seconds=_ttl(payload.get("ttl_seconds")),
    )


def delete_op_from(
    payload: dict[str, Any], ctx: ExecutionContext, settings: Settings, if_match: int | None = None
) -> DeleteOp:
    """A validated :class:`DeleteOp` from a delete request body (also one op of a batch)."""
    key = validate_key(payload.get("key"), settings)
    scope, scope_id = target_scope(parse_scope(payload.get("scope")), ctx)
    if_version = _optional_version(payload.get("if_version"))
    return DeleteOp(
        scope,
        scope_id,
        key,
        event_metadata(ctx),
        if_version=if_match if if_version is None else if_version,
    )


async def apply_set(
    service: MemoryService,
    payload: dict[str, Any],
    ctx: ExecutionContext,
    if_match: int | None = None,
) -> Record:
    op = set_op_from(payload, ctx, service.settings, if_match)
    store = await service.ready()
    return await store.set(op)


async def apply_get(
    service: MemoryService, payload: dict[str, Any], ctx: ExecutionContext
) -> Record:
    key = validate_key(payload.get("key"), service.settings)
    chain = read_chain(parse_scope(payload.get("scope")), ctx)
    store = await service.ready()
    record = await store.get(key, chain)
    if record is None:
        raise NotFound(f"key {key!r} not found", details={"key": key})
    return record


async def apply_delete(
    service: MemoryService,
    payload: dict[str, Any],
    ctx: ExecutionContext,
    if_match: int | None = None,
) -> None:
    op = delete_op_from(payload, ctx, service.settings, if_match)
    store = await service.ready()
    await store.delete(op)


async def apply_list(
    service: MemoryService, query: Mapping[str, str], ctx: ExecutionContext
) -> tuple[list[Record], str | None]:
    """The records of one scope, and the cursor of the next page (None on the last)."""
    scope = parse_scope(query.get("scope"))
    if scope is None:
        raise BadRequest("'scope' query parameter is required", code="missing_scope")
    scope_id = scope_id_for(scope, ctx)
    pattern = query.get("pattern") or None
    if pattern is not None:
        compile_pattern(pattern)
    limit = int_param(query.get("limit"), "limit", minimum=1, maximum=10_000)
    cursor = query.get("cursor") or None
    after_key = unquote(cursor) if cursor is not None else None
    store = await service.ready()
    records = await store.list(
        scope,
        scope_id,
        prefix=query.get("prefix") or None,
        pattern=pattern,
        limit=None if limit is None else limit + 1,
        after_key=after_key,
    )
    if limit is not None and len(records) > limit:
        records = records[:limit]
        return records, quote(records[-1].key, safe="")
    return records, None


def _etag(record: Record) -> dict[str, str]:
    return {"ETag": f'"{record.version}"'}


def routes(service: MemoryService) -> list[Route]:
    settings = service.settings

    async def memory_set(request: Request) -> Response:
        payload = await read_json_object(request, settings)
        record = await apply_set(service, payload, request_context(request), _if_match(request))
        return raw_json_response(record.to_json(), headers=_etag(record))

    async def memory_get(request: Request) -> Response:
        payload = await read_json_object(request, settings)
        record = await apply_get(service, payload, request_context(request))
        return raw_json_response(record.to_json(), headers=_etag(record))

    async def memory_delete(request: Request) -> Response:
        payload = await read_json_object(request, settings)
        await apply_delete(service, payload, request_context(request), _if_match(request))
        return Response(status_code=204)

    async def memory_list(request: Request) -> Response:
        ctx = request_context(request)
        records, next_cursor = await apply_list(service, request.query_params, ctx)
        headers = {"X-Next-Cursor": next_cursor} if next_cursor is not None else {}
        return json_response([r.to_dict() for r in records], headers=headers)

    return [
        Route("/memory/set", memory_set, methods=["POST"]),
        Route("/memory/get", memory_get, methods=["POST"]),
        Route("/memory/delete", memory_delete, methods=["POST"]),
        Route("/memory/list", memory_list, methods=["GET"]),
    ]
