"""Request parsing and responses shared by every route: one place for the
protocol's input rules (keys, scopes, sizes) and its error body."""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ..codec import JSONDecodeError, dumps, loads
from ..context import SCOPE_HEADERS, ExecutionContext
from ..errors import (
    INVALID_PARAMETER,
    INVALID_SCOPE_ID,
    INVALID_VALUE,
    TOO_DEEP,
    AgentFieldError,
    BadRequest,
    InvalidJSON,
    InvalidKey,
    InvalidScope,
    MissingScopeId,
    PayloadTooLarge,
)
from ..settings import Settings
from ..store.base import GLOBAL_SCOPE_ID, SCOPES, ScopeRef, resolution_chain, write_target
from . import access

JSON = "application/json"
BODY_OVERHEAD = 64 * 1024  # room for the key and other fields around a maximal value
# A value's limit is on its compact UTF-8 JSON; clients may send it \u-escaped (Python's
# json.dumps does by default), up to 3x larger (an emoji is 4 bytes, or 12 as two escapes).
BODY_EXPANSION = 4
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


def json_response(
    content: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(dumps(content), status_code=status, media_type=JSON, headers=headers)


def raw_json_response(
    body: bytes, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(body, status_code=status, media_type=JSON, headers=headers)


async def send_json(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """A complete response straight to ASGI ``send`` (JSON body; none for 204)."""
    raw = list(headers or ())
    if status != 204:
        raw += [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body if status != 204 else b""})


def error_response(exc: AgentFieldError) -> Response:
    return json_response(exc.to_body(), exc.status)


def header_value(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    """One header from raw ASGI headers (``name`` lower-case), or None."""
    for key, value in headers:
        if key == name or key.lower() == name:
            return value.decode("latin-1")
    return None


async def receive_body(receive: Receive, headers: list[tuple[bytes, bytes]], limit: int) -> bytes:
    """The request body from ASGI ``receive``, read incrementally and cut off (413) past
    ``limit`` bytes, before reading it when Content-Length already says so."""
    declared = header_value(headers, b"content-length")
    if declared is not None:
        try:
            too_large = int(declared) > limit
        except ValueError:
            raise BadRequest("invalid Content-Length") from None
        if too_large:
            raise PayloadTooLarge("request body too large", details={"max_bytes": limit})
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge("request body too large", details={"max_bytes": limit})
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, read incrementally and cut off (413) past ``limit`` bytes."""
    return await receive_body(request.receive, request.scope["headers"], limit)


def body_limit(settings: Settings) -> int:
    """The largest request body a single-value route reads (413 beyond it)."""
    return settings.max_value_bytes * BODY_EXPANSION + BODY_OVERHEAD


async def read_json_object(
    request: Request,
    settings: Settings,
    limit: int | None = None,
    *,
    empty_ok: bool = False,
    fields: frozenset[str] | None = None,
) -> dict[str, Any]:
    """The body as a JSON object (400 otherwise; an empty body is ``{}`` when ``empty_ok``),
    at most ``limit`` bytes (413; default :func:`body_limit`). ``fields``: the top-level
    fields the route reads; a 4xx raised later names the others (:func:`name_unknown_fields`)."""
    body = await read_body(request, body_limit(settings) if limit is None else limit)
    payload = parse_json_object(body, empty_ok=empty_ok)
    if fields is not None:
        request.scope[_BODY_FIELDS] = (payload, fields)
    return payload


_BODY_FIELDS = "agentfield.body_fields"


def name_unknown_fields(
    exc: AgentFieldError, payload: dict[str, Any], known: frozenset[str]
) -> None:
    """On a refusal (4xx), list in ``details.unknown_fields`` the body's top-level fields
    outside ``known``: a misspelt field is the likely cause. Accepted requests ignore them."""
    if not 400 <= exc.status < 500:
        return
    unknown = sorted(name for name in payload if name not in known)
    if unknown:
        exc.details = {**exc.details, "unknown_fields": unknown}


def name_request_unknown_fields(exc: AgentFieldError, scope: Scope) -> None:
    """:func:`name_unknown_fields` for the body :func:`read_json_object` read with ``fields``."""
    read = scope.get(_BODY_FIELDS)
    if read is not None:
        name_unknown_fields(exc, *read)


def parse_json_object(body: bytes, *, empty_ok: bool = False) -> dict[str, Any]:
    """``body`` as a JSON object (400 otherwise; empty is ``{}`` when ``empty_ok``)."""
    if not body.strip():
        if empty_ok:
            return {}
        raise InvalidJSON("request body must be a JSON object")
    try:
        payload = loads(body)
    except JSONDecodeError as exc:
        raise InvalidJSON(f"malformed JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise InvalidJSON("request body must be a JSON object")
    return payload


def validate_key(value: Any, settings: Settings, field: str = "key") -> str:
    """``value`` as a key: a non-empty string of at most ``max_key_bytes`` UTF-8 bytes, no NUL."""
    if not isinstance(value, str):
        raise InvalidKey(f"'{field}' must be a string", details={"field": field})
    if not value:
        raise InvalidKey(f"'{field}' must not be empty", details={"field": field})
    # A character is at most 4 UTF-8 bytes: short keys need no encoding to be measured.
    if len(value) * 4 > settings.max_key_bytes:
        try:
            size = len(value.encode("utf-8"))
        except UnicodeEncodeError:  # a lone surrogate (only reachable from Python callers)
            raise InvalidKey(f"'{field}' is not valid Unicode", details={"field": field}) from None
        if size > settings.max_key_bytes:
            raise InvalidKey(
                f"'{field}' is longer than {settings.max_key_bytes} bytes",
                details={"field": field, "max_bytes": settings.max_key_bytes},
            )
    if "\x00" in value:
        # PostgreSQL text cannot hold NUL; refuse it on every backend alike.
        raise InvalidKey(f"'{field}' must not contain NUL characters", details={"field": field})
    return value


def encode_value(value: Any, settings: Settings) -> bytes:
    """Compact JSON for a value to store; 413 when too large, 400 when too deep or unstorable."""
    try:
        encoded = dumps(value)
    except TypeError:  # orjson refuses to nest deeper than 254 levels
        raise _too_deep_error(settings) from None
    if len(encoded) > settings.max_value_bytes:
        raise PayloadTooLarge(
            f"value is {len(encoded)} bytes; the limit is {settings.max_value_bytes}",
            details={"size": len(encoded), "max_bytes": settings.max_value_bytes},
        )
    # Nesting depth is at most the number of opening brackets (those inside strings only
    # add to the count), so most values skip the walk over the parsed value.
    limit = settings.max_json_depth
    if encoded.count(b"[") + encoded.count(b"{") > limit and _too_deep(value, limit):
        raise _too_deep_error(settings)
    if b"\\u0000" in encoded and _NUL_ESCAPE.search(encoded):
        # PostgreSQL JSONB cannot hold NUL; refuse it on every backend alike.
        raise BadRequest("strings in values must not contain NUL (\\u0000)", code=INVALID_VALUE)
    return encoded


def _too_deep_error(settings: Settings) -> BadRequest:
    return BadRequest(
        f"value nests deeper than {settings.max_json_depth} levels",
        code=TOO_DEEP,
        details={"max_depth": settings.max_json_depth},
    )


def _too_deep(value: Any, limit: int) -> bool:
    if not isinstance(value, dict | list):
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        for child in children:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return False


def parse_scope(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or value not in SCOPES:
        raise InvalidScope(
            f"unknown scope {value!r}; expected one of {', '.join(SCOPES)}",
            details={"scope": value, "allowed": list(SCOPES)},
        )
    return value


def scope_id_for(scope: str, ctx: ExecutionContext) -> str:
    """The id of an explicitly named scope, from its header (400 when missing)."""
    if scope == "global":
        return GLOBAL_SCOPE_ID
    value = {"workflow": ctx.workflow_id, "session": ctx.session_id, "actor": ctx.actor_id}[scope]
    if not value:
        header = SCOPE_HEADERS[scope]
        raise MissingScopeId(
            f"scope '{scope}' needs the {header} header", details={"scope": scope, "header": header}
        )
    return value


def target_scope(scope: str | None, ctx: ExecutionContext, action: str = "write") -> ScopeRef:
    """Where a write/delete/vector call acts: the named scope, or the unscoped write target;
    403 unless the request's key may ``action`` (``write``, or ``read``) it."""
    if scope is not None:
        ref = scope, scope_id_for(scope, ctx)
    else:
        ref = write_target(ctx.workflow_id, ctx.session_id, ctx.actor_id)
    access.current().require(action, *ref)
    return ref


def read_chain(scope: str | None, ctx: ExecutionContext) -> list[ScopeRef]:
    """Which scopes a read searches: the named one (403 unless the key may read it), or
    the hierarchy, narrowed to the scopes the key may read (403 when none)."""
    if scope is not None:
        scope_id = scope_id_for(scope, ctx)
        access.current().require("read", scope, scope_id)
        return [(scope, scope_id)]
    return access.current().readable(
        resolution_chain(ctx.workflow_id, ctx.session_id, ctx.actor_id)
    )


def event_metadata(ctx: ExecutionContext) -> dict[str, Any]:
    return {"agent_id": ctx.agent_node_id, "actor_id": ctx.actor_id, "workflow_id": ctx.workflow_id}


MAX_SCOPE_ID_LENGTH = 1024


def request_context(request: Request) -> ExecutionContext:
    """The caller's execution context; 400 when a scope id header is longer than 1,024."""
    return context_from_headers(request.scope["headers"])


def context_from_headers(headers: list[tuple[bytes, bytes]]) -> ExecutionContext:
    """:func:`request_context` from raw ASGI headers."""
    ctx = ExecutionContext.from_headers(headers)
    for scope in ("workflow", "session", "actor"):
        value = getattr(ctx, f"{scope}_id")
        if value is not None and len(value) > MAX_SCOPE_ID_LENGTH:
            raise BadRequest(
                f"the {scope} id is longer than {MAX_SCOPE_ID_LENGTH} characters",
                code=INVALID_SCOPE_ID,
                details={"scope": scope, "max_length": MAX_SCOPE_ID_LENGTH},
            )
    return ctx


def int_param(
    value: Any, name: str, *, minimum: int, maximum: int, default: int | None = None
) -> int | None:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise BadRequest(
            f"'{name}' must be an integer", code=INVALID_PARAMETER, details={"parameter": name}
        )
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise BadRequest(
            f"'{name}' must be an integer", code=INVALID_PARAMETER, details={"parameter": name}
        ) from None
    if not minimum <= number <= maximum:
        raise BadRequest(
            f"'{name}' must be between {minimum} and {maximum}",
            code=INVALID_PARAMETER,
            details={"parameter": name, "min": minimum, "max": maximum},
        )
    return number
