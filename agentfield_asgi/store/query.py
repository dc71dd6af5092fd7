"""Filtered, paged reads of one scope id (the ``/memory/query`` extension).

Implemented once over :meth:`Store.list`, so both backends answer alike: the
server walks the keys under ``prefix`` in key order, page by page, evaluates
``filter`` on each stored value in its own process and returns only the matches
(the client never fetches what the filter rejects).

Filter semantics are LangGraph's (its ``InMemoryStore`` and ``PostgresStore``):
``{"field": value}`` compares the value's top-level ``field`` with ``value``
(objects match when every given field matches, recursively; arrays element by
element); ``{"field": {"$eq"|"$ne"|"$gt"|"$gte"|"$lt"|"$lte": operand}}`` applies
the operators, all of which must hold. Order comparisons are numeric; a value
that is not a number (or is absent) does not match them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ..errors import INVALID_FILTERS, BadRequest
from .base import Record, Store

OPERATORS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte")
_ORDER: dict[str, Callable[[float, float], bool]] = {
    "$gt": lambda a, b: a > b,
    "$gte": lambda a, b: a >= b,
    "$lt": lambda a, b: a < b,
    "$lte": lambda a, b: a <= b,
}
SCAN_PAGE = 500


def _invalid(message: str, field: str) -> BadRequest:
    return BadRequest(message, code=INVALID_FILTERS, details={"field": field})


def validate_filter(flt: Any) -> dict[str, Any]:
    """``flt`` checked (an object; operators known, order operands numbers) or 400."""
    if flt is None:
        return {}
    if not isinstance(flt, dict):
        raise _invalid("'filter' must be an object", "filter")
    for field, condition in flt.items():
        _check_condition(condition, field)
    return flt


def _check_condition(condition: Any, field: str) -> None:
    """Operators anywhere in a condition (nested objects and arrays too) must be valid."""
    if isinstance(condition, list):
        for item in condition:
            _check_condition(item, field)
    elif isinstance(condition, dict) and any(str(k).startswith("$") for k in condition):
        for op, operand in condition.items():
            if op not in OPERATORS:
                raise _invalid(f"unknown operator {op!r}; use one of {OPERATORS}", field)
            if op in _ORDER and not _is_number(operand):
                raise _invalid(f"{op} needs a number, not {operand!r}", field)
    elif isinstance(condition, dict):
        for key, inner in condition.items():
            _check_condition(inner, f"{field}.{key}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _compare(value: Any, expected: Any) -> bool:
    if isinstance(expected, dict):
        if any(k.startswith("$") for k in expected):
            return all(_apply(value, op, operand) for op, operand in expected.items())
        if not isinstance(value, dict):
            return False
        return all(_compare(value.get(k), v) for k, v in expected.items())
    if isinstance(expected, list):
        return (
            isinstance(value, list)
            and len(value) == len(expected)
            and all(_compare(a, b) for a, b in zip(value, expected, strict=True))
        )
    return bool(value == expected)


def _apply(value: Any, op: str, operand: Any) -> bool:
    if op == "$eq":
        return bool(value == operand)
    if op == "$ne":
        return bool(value != operand)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False  # LangGraph's reference raises here; a non-number simply does not match
    return _ORDER[op](float(value), float(operand))


def matches(value: Any, flt: dict[str, Any]) -> bool:
    """Whether a stored value (a JSON object) satisfies a validated filter."""
    if not flt:
        return True
    if not isinstance(value, dict):
        return False
    return all(_compare(value.get(field), expected) for field, expected in flt.items())


async def query(
    store: Store,
    scope: str,
    scope_id: str,
    *,
    prefix: str | None,
    flt: dict[str, Any],
    limit: int,
    offset: int,
) -> list[Record]:
    """Records under ``prefix`` whose value matches ``flt``, in key order, after skipping
    ``offset`` matches, at most ``limit``."""
    out: list[Record] = []
    skip = offset
    after: str | None = None
    while len(out) < limit:
        page = await store.list(scope, scope_id, prefix=prefix, limit=SCAN_PAGE, after_key=after)
        for record in page:
            if flt and not matches(record.data, flt):
                continue
            if skip:
                skip -= 1
                continue
            out.append(record)
            if len(out) == limit:
                break
        if len(page) < SCAN_PAGE:
            break
        after = page[-1].key
    return out


async def keys(
    store: Store, scope: str, scope_id: str, *, prefix: str | None, limit: int, after: str | None
) -> list[str]:
    """Keys under ``prefix`` in key order, starting after ``after``, at most ``limit``."""
    records = await store.list(scope, scope_id, prefix=prefix, limit=limit, after_key=after)
    return [r.key for r in records]


async def ranked(
    store: Store,
    scope: str,
    scope_id: str,
    embedding: Any,
    *,
    prefix: str | None,
    flt: dict[str, Any],
    vector_filters: dict[str, Any] | None,
    limit: int,
    offset: int,
    metric: str,
    top_k: int,
) -> list[tuple[Record, float | None]]:
    """Records under ``prefix`` matching ``flt``, best vector first.

    A record's vectors are those whose metadata ``record_key`` names it (else the
    vector's own key); its score is its best one. When fewer than ``limit`` ranked
    records remain after ``offset``, unranked matches (records without vectors)
    fill the page, in key order, with no score (LangGraph's ``InMemoryStore`` rule).
    """
    hits = await store.vector_search(
        scope, scope_id, embedding, top_k=top_k, filters=vector_filters, metric=metric
    )
    best: dict[str, float] = {}
    for hit in hits:
        key = hit.metadata.get("record_key", hit.key)
        if isinstance(key, str) and (prefix is None or key.startswith(prefix)):
            best.setdefault(key, hit.score)  # hits come best first
    found = await store.get_many(list(best), [(scope, scope_id)]) if best else {}
    scored = [
        (found[key], score)
        for key, score in best.items()
        if key in found and matches(found[key].data, flt)
    ]
    out: list[tuple[Record, float | None]] = list(scored[offset : offset + limit])
    if len(out) < limit:
        unranked = await query(
            store, scope, scope_id, prefix=prefix, flt=flt, limit=limit + len(best), offset=0
        )
        rest = [r for r in unranked if r.key not in best]
        out.extend((r, None) for r in rest[: limit - len(out)])
    return out
