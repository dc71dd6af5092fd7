"""The memory tools: names, input schemas and descriptions (a contract), and what each does.

Each tool is one REST call through :class:`~.backend.MemoryBackend`; its result is what
the route returns (a record carries ``version``). Arguments are checked by the routes
themselves, so a bad argument gets the protocol's error code and stores nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ...context import ExecutionContext
from .backend import MemoryBackend, Target, ToolError

Handler = Callable[[MemoryBackend, Target, dict[str, Any]], Awaitable[dict[str, Any]]]

_SCOPE_ARGS: dict[str, Any] = {
    "scope": {
        "type": "string",
        "enum": ["workflow", "session", "actor", "global"],
        "description": "Which memory to use. Omit it to use the default: a read looks in "
        "workflow, then session, then actor, then global memory; a write goes to the first of "
        "workflow, session, actor that has an id, else global. 'global' is shared by everyone.",
    },
    "scope_id": {
        "type": "string",
        "description": "The id within 'scope' (e.g. a session id); only with 'scope'. "
        "Omit it to use this server's current id for that scope.",
    },
}
_KEY = {"type": "string", "description": "The key (any non-empty string up to 1024 bytes)."}
_ANY = {"description": "Any JSON value (object, array, string, number, boolean or null)."}
_EMBEDDING = {"type": "array", "items": {"type": "number"}, "minItems": 1}


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    description: str
    properties: dict[str, Any]
    required: tuple[str, ...]
    handler: Handler

    def input_schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {**self.properties, **_SCOPE_ARGS},
            "required": list(self.required),
            "additionalProperties": False,
        }


def _opt(args: dict[str, Any], *names: str) -> dict[str, Any]:
    return {n: args[n] for n in names if args.get(n) is not None}


async def _set(b: MemoryBackend, t: Target, a: dict[str, Any]) -> dict[str, Any]:
    body = {"key": a.get("key"), "data": a.get("value"), **_opt(a, "ttl_seconds", "if_version")}
    if "value" not in a:
        raise ToolError("'value' is required (null is a valid value)", "missing_data")
    return (await b.call("POST", "set", t, body=body)).body  # type: ignore[no-any-return]


async def _get(b: MemoryBackend, t: Target, a: dict[str, Any]) -> dict[str, Any]:
    key = a.get("key")
    reply = await b.call("POST", "get", t, body={"key": key}, miss_ok="default" in a)
    if reply.status == 404:
        return {"key": key, "data": a["default"], "found": False}
    return reply.body  # type: ignore[no-any-return]


async def _exists(b: MemoryBackend, t: Target, a: dict[str, Any]) -> dict[str, Any]:
    key = a.get("key")
    reply = await b.call("POST", "get", t, body={"key": key}, miss_ok=True)
    if reply.status == 404:
        return {"key": key, "exists": False}
    record = reply.body
    return {"key": key, "exists": True, **_opt(record, "scope", "scope_id", "version")}


async def _delete(b: MemoryBackend, t: Target, a: dict[str, Any]) -> dict[str, Any]:
    await b.call("POST", "delete", t, body={"key": a.get("key")})
    return {"key": a.get("key"), "deleted": True}


async def _list_keys(b: MemoryBackend, t: Target, a: dict[str, Any]) -> dict[str, Any]:
    scope, scope_id = t.write_scope()
    params = {"scope": scope, "limit": str(a.get("limit", 100))}
    params.update({k: str(v) for k, v in _opt(a, "prefix", "pattern", "cursor").items()})
    reply = await b.call("GET", "list", Target(scope, t.headers), params=params)
    cursor = reply.headers.get("x-next-cursor") or reply.headers.get("X-Next-Cursor")
    keys = [item["key"] for item in reply.body]
    return {"scope": scope, "scope_id": scope_id, "keys": keys, "next_cursor": cursor}


async def _increment(b: MemoryBackend, t: Target, a: dict[str, Any]) -> dict[str, Any]:
    body = {"key": a.get("key"), "by": a.get("by", 1)}
    return (await b.call("POST", "incr", t, body=body)).body  # type: ignore[no-any-return]


async def _compare_and_set(b: MemoryBackend, t: Target, a: dict[str, Any]) -> dict[str, Any]:
    if "expected_version" not in a:
        raise ToolError("'expected_version' is required", "invalid_parameter")
    if "value" not in a:
        raise ToolError("'value' is required (null is a valid value)", "missing_data")
    body = {"key": a.get("key"), "data": a["value"], "if_version": a["expected_version"]}
    return (await b.call("POST", "set", t, body=body)).body  # type: ignore[no-any-return]


async def _history(b: MemoryBackend, t: Target, a: dict[str, Any]) -> dict[str, Any]:
    params = {k: str(v) for k, v in _opt(a, "since_id", "since", "limit").items()}
    patterns = a.get("patterns")
    if patterns is not None:
        if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
            raise ToolError("'patterns' must be a list of glob strings", "invalid_pattern")
        params["patterns"] = ",".join(patterns)
    if t.scope is not None:
        params["scope"] = t.scope
        scope_id = t.scope_id(t.scope)
        if scope_id is not None:
            params["scope_id"] = scope_id
    reply = await b.call("GET", "events/history", t, params=params)
    return {"events": reply.body}


async def _set_vector(b: MemoryBackend, t: Target, a: dict[str, Any]) -> dict[str, Any]:
    body = {"key": a.get("key"), "embedding": a.get("embedding"), **_opt(a, "metadata")}
    return (await b.call("POST", "vector/set", t, body=body)).body  # type: ignore[no-any-return]


async def _similarity_search(b: MemoryBackend, t: Target, a: dict[str, Any]) -> dict[str, Any]:
    body = {"query_embedding": a.get("query_embedding"), **_opt(a, "top_k", "filters")}
    return {"results": (await b.call("POST", "vector/search", t, body=body)).body}


TOOLS: tuple[ToolSpec, ...] = (
    ToolSpec(
        "memory_set",
        "Store a value under a key in shared memory, replacing any previous value; returns "
        "the stored record with its new 'version'. Use 'ttl_seconds' for a value that should "
        "expire, and 'if_version' to write only if the record is still at that version "
        "(0: only if the key does not exist yet).",
        {
            "key": _KEY,
            "value": _ANY,
            "ttl_seconds": {"type": "number", "exclusiveMinimum": 0},
            "if_version": {"type": "integer", "minimum": 0},
        },
        ("key", "value"),
        _set,
    ),
    ToolSpec(
        "memory_get",
        "Read the value stored under a key; returns the record ('data' is the value, with "
        "'version', 'scope', 'updated_at'). Without 'scope' it looks in workflow, session, "
        "actor, then global memory and returns the first hit. A missing key is an error "
        "('not_found') unless 'default' is given, which is then returned with found=false.",
        {"key": _KEY, "default": _ANY},
        ("key",),
        _get,
    ),
    ToolSpec(
        "memory_exists",
        "Check whether a key holds a value (a stored null counts); returns exists and, when "
        "it does, the scope holding it and its version.",
        {"key": _KEY},
        ("key",),
        _exists,
    ),
    ToolSpec(
        "memory_delete",
        "Delete a key (no error if it does not exist).",
        {"key": _KEY},
        ("key",),
        _delete,
    ),
    ToolSpec(
        "memory_list_keys",
        "List the keys of one memory scope, sorted, optionally only those starting with "
        "'prefix' or matching the glob 'pattern' (* any run, ? one character). Results are "
        "paged: pass the returned 'next_cursor' as 'cursor' for the next page (null: no more).",
        {
            "prefix": {"type": "string"},
            "pattern": {"type": "string"},
            "limit": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 100},
            "cursor": {"type": "string"},
        },
        (),
        _list_keys,
    ),
    ToolSpec(
        "memory_increment",
        "Atomically add 'by' (default 1, may be negative or fractional) to a numeric value; "
        "an absent key counts as 0. Safe when many agents count at once. Returns the record "
        "holding the new value.",
        {"key": _KEY, "by": {"type": "number", "default": 1}},
        ("key",),
        _increment,
    ),
    ToolSpec(
        "memory_compare_and_set",
        "Write a value only if the key's current version equals 'expected_version' (0: only "
        "if the key is absent), so an update based on a value you read is not lost if someone "
        "wrote meanwhile. On a mismatch it fails with 'version_conflict' and the current record "
        "in details.current: read it, recompute and try again.",
        {"key": _KEY, "value": _ANY, "expected_version": {"type": "integer", "minimum": 0}},
        ("key", "value", "expected_version"),
        _compare_and_set,
    ),
    ToolSpec(
        "memory_history",
        "Recent changes to memory (sets and deletes, oldest first), optionally only keys "
        "matching glob 'patterns', changes after event id 'since_id' (to page forward) or at "
        "or after the RFC 3339 time 'since'.",
        {
            "patterns": {"type": "array", "items": {"type": "string"}},
            "since_id": {"type": ["string", "integer"], "description": "an event id"},
            "since": {"type": "string", "description": "RFC 3339, e.g. 2026-01-01T00:00:00Z"},
            "limit": {"type": "integer", "minimum": 1, "default": 100},
        },
        (),
        _history,
    ),
    ToolSpec(
        "memory_set_vector",
        "Store an embedding (a list of numbers) under a key, with optional JSON 'metadata', "
        "for later similarity search; replaces any vector under that key.",
        {"key": _KEY, "embedding": _EMBEDDING, "metadata": {"type": "object"}},
        ("key", "embedding"),
        _set_vector,
    ),
    ToolSpec(
        "memory_similarity_search",
        "Find the stored vectors nearest to 'query_embedding' in one scope, best first, each "
        "with key, score and metadata. 'filters' keeps only vectors whose metadata fields "
        "equal the given values.",
        {
            "query_embedding": _EMBEDDING,
            "top_k": {"type": "integer", "minimum": 1, "default": 10},
            "filters": {"type": "object"},
        },
        ("query_embedding",),
        _similarity_search,
    ),
)
BY_NAME: dict[str, ToolSpec] = {spec.name: spec for spec in TOOLS}


async def run_tool(
    backend: MemoryBackend,
    name: str,
    args: dict[str, Any],
    request_ctx: ExecutionContext | None = None,
) -> dict[str, Any]:
    """Run one tool; raises :class:`ToolError` with the protocol's code on any failure."""
    spec = BY_NAME.get(name)
    if spec is None:
        raise ToolError(f"unknown tool {name!r}", "unknown_tool", {"tools": list(BY_NAME)})
    if not isinstance(args, dict):
        raise ToolError("tool arguments must be an object", "invalid_json")
    allowed = {*spec.properties, *_SCOPE_ARGS}
    unknown = sorted(set(args) - allowed)
    if unknown:
        raise ToolError(
            f"unknown argument(s) {', '.join(unknown)} for {name}",
            "invalid_parameter",
            {"unknown": unknown, "allowed": sorted(allowed)},
        )
    missing = [r for r in spec.required if r not in args]
    if missing:
        raise ToolError(
            f"missing required argument(s) {', '.join(missing)} for {name}",
            "invalid_parameter",
            {"missing": missing},
        )
    target = backend.target(args.get("scope"), args.get("scope_id"), request_ctx)
    return await spec.handler(backend, target, args)
