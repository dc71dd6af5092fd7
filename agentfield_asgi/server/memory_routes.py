"""``/api/v1/memory/{set,get,delete,list}``: HTTP <-> Store, per the protocol."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ..codec import dumps
from ..context import ExecutionContext
from ..errors import (
    INVALID_PARAMETER,
    MISSING_DATA,
    MISSING_SCOPE,
    AgentFieldError,
    BadRequest,
    NotFound,
)
from ..patterns import compile_pattern
from ..settings import Settings
from ..store.base import DeleteOp, Record, SetOp
from . import access
from .http import (
    body_limit,
    context_from_headers,
    encode_value,
    event_metadata,
    header_value,
    int_param,
    json_response,
    name_unknown_fields,
    parse_json_object,
    parse_scope,
    read_chain,
    receive_body,
    request_context,
    scope_id_for,
    send_json,
    target_scope,
    validate_key,
)
from .routes import Served

if TYPE_CHECKING:
    from .app import MemoryService

log = logging.getLogger("agentfield_asgi.server")


def _optional_version(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadRequest("'if_version' must be a non-negative integer", code=INVALID_PARAMETER)
    return value


def _if_match(header: str | None) -> int | None:
    if header is None:
        return None
    try:
        return _optional_version(int(header.strip().strip('"').removeprefix("W/").strip('"')))
    except ValueError:
        raise BadRequest(
            "If-Match must be a record version number", code=INVALID_PARAMETER
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
            "'ttl_seconds' must be a positive number of seconds", code=INVALID_PARAMETER
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
        message = (
            "'data' is required (did you mean 'data' instead of 'value'?)"
            if "value" in payload  # the name most other stores use
            else "'data' is required (null is a valid value)"
        )
        raise BadRequest(message, code=MISSING_DATA)
    data_json = encode_value(payload["data"], settings)
    scope, scope_id = target_scope(parse_scope(payload.get("scope")), ctx)
    metadata = payload.get("metadata")
    if metadata is None:
        metadata = {}
    elif not isinstance(metadata, dict):
        raise BadRequest("'metadata' must be an object", code=INVALID_PARAMETER)
    if_version = _optional_version(payload.get("if_version"))
    ttl_seconds = _ttl(payload.get("ttl_seconds"))
    meta = event_metadata(ctx)
    if ttl_seconds is not None:
        meta["ttl_seconds"] = ttl_seconds  # subscribers learn that the value will expire
    return SetOp(
        scope,
        scope_id,
        key,
        data_json,
        event_metadata=meta,
        metadata=metadata,
        if_version=if_match if if_version is None else if_version,
        ttl_seconds=ttl_seconds,
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
        raise BadRequest("'scope' query parameter is required", code=MISSING_SCOPE)
    scope_id = scope_id_for(scope, ctx)
    access.current().require("read", scope, scope_id)
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


Operation = Callable[
    ["MemoryService", dict[str, Any], ExecutionContext, "int | None"],
    Awaitable[tuple[int, bytes, list[tuple[bytes, bytes]]]],
]


class MemoryEndpoint:
    """One memory operation as a plain ASGI endpoint.

    set/get/delete carry most of the traffic, and Starlette's Request/Response objects
    and routing cost more than the operation itself (FIELD-NOTES, "where the time
    goes"): the service's entry point dispatches these POSTs here directly, and the
    router holds the same object, so other methods still get 405.
    """

    def __init__(
        self, service: MemoryService, operation: Operation, fields: frozenset[str]
    ) -> None:
        self.service = service
        self.operation = operation
        self.fields = fields  # the body fields the operation reads

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = scope["headers"]
        payload: dict[str, Any] = {}
        try:
            body = await receive_body(receive, headers, body_limit(self.service.settings))
            payload = parse_json_object(body)
            status, content, extra = await self.operation(
                self.service,
                payload,
                context_from_headers(headers),
                _if_match(header_value(headers, b"if-match")),
            )
        except AgentFieldError as exc:
            name_unknown_fields(exc, payload, self.fields)
            status, content, extra = exc.status, dumps(exc.to_body()), []
        except ClientDisconnect:
            return
        except Exception:
            log.exception("unhandled error on POST %s", scope.get("path"))
            status, content, extra = 500, _INTERNAL_ERROR, []
        await send_json(send, status, content, extra)


# The body fields each operation reads; a refused request names the others.
SET_FIELDS = frozenset({"key", "data", "scope", "metadata", "if_version", "ttl_seconds"})
GET_FIELDS = frozenset({"key", "scope"})
DELETE_FIELDS = frozenset({"key", "scope", "if_version"})


_INTERNAL_ERROR = dumps(
    {"error": "internal server error", "code": AgentFieldError.code, "details": {}}
)


def _etag(record: Record) -> list[tuple[bytes, bytes]]:
    return [(b"etag", b'"%d"' % record.version)]


async def _set(
    service: MemoryService, payload: dict[str, Any], ctx: ExecutionContext, if_match: int | None
) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    record = await apply_set(service, payload, ctx, if_match)
    return 200, record.to_json(), _etag(record)


async def _get(
    service: MemoryService, payload: dict[str, Any], ctx: ExecutionContext, if_match: int | None
) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    record = await apply_get(service, payload, ctx)
    return 200, record.to_json(), _etag(record)


async def _delete(
    service: MemoryService, payload: dict[str, Any], ctx: ExecutionContext, if_match: int | None
) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    await apply_delete(service, payload, ctx, if_match)
    return 204, b"", []


def _fast_route(path: str, endpoint: MemoryEndpoint) -> Served:
    return Served(Route(path, endpoint, methods=["POST"]), fast=True)


def routes(service: MemoryService) -> list[Route | Served]:
    async def memory_list(request: Request) -> Response:
        ctx = request_context(request)
        records, next_cursor = await apply_list(service, request.query_params, ctx)
        headers = {"X-Next-Cursor": next_cursor} if next_cursor is not None else {}
        return json_response([r.to_dict() for r in records], headers=headers)

    return [
        _fast_route("/memory/set", MemoryEndpoint(service, _set, SET_FIELDS)),
        _fast_route("/memory/get", MemoryEndpoint(service, _get, GET_FIELDS)),
        _fast_route("/memory/delete", MemoryEndpoint(service, _delete, DELETE_FIELDS)),
        Route("/memory/list", memory_list, methods=["GET"]),
    ]
