"""What each write op means, independent of the database.

Backends fetch the current row, call these to decide the outcome, then write
what they return. Keeping the rules here is what makes both backends agree: for
key-value ops (``plan_set`` / ``plan_incr`` / ``plan_delete``) and for vector ops
(``plan_vector``). Nothing here imports numpy: the SQLite writer process uses it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..codec import dumps, loads
from ..errors import DimensionMismatch, NotANumber, OutOfRange, VersionConflict
from .base import DeleteOp, IncrOp, Record, SetOp, VectorDeleteOp, VectorRecord, VectorSetOp

INT_MIN, INT_MAX = -(2**63), 2**63 - 1
"""Integer counters stay within signed 64 bits (what every JSON reader we know keeps exact)."""


def is_live(record: Record | None, now_us: int) -> bool:
    return record is not None and (record.expires_us is None or record.expires_us > now_us)


def check_version(if_version: int | None, current: Record | None, key: str) -> None:
    """Raise 412 unless ``if_version`` matches (None = unconditional, 0 = only if absent)."""
    if if_version is None:
        return
    have = current.version if current is not None else 0
    if have != if_version:
        raise VersionConflict(
            f"version mismatch for key {key!r}: expected {if_version}, current {have}",
            details={
                "key": key,
                "expected_version": if_version,
                "current_version": have,
                # Plain values (not pre-encoded fragments): the in-process transport hands
                # error details to callers without a JSON round trip.
                "current": None if current is None else {**current.to_dict(), "data": current.data},
            },
        )


def plan_set(op: SetOp, stored: Record | None, now_us: int) -> tuple[Record, Record | None]:
    """The record to write for ``op`` and the live previous record (or None)."""
    previous = stored if is_live(stored, now_us) else None
    check_version(op.if_version, previous, op.key)
    version = (stored.version + 1) if stored is not None else 1
    expires = None if op.ttl_seconds is None else now_us + int(op.ttl_seconds * 1_000_000)
    record = Record(
        scope=op.scope,
        scope_id=op.scope_id,
        key=op.key,
        data_json=op.data_json,
        created_us=previous.created_us if previous is not None else now_us,
        updated_us=now_us,
        version=version,
        metadata=op.metadata or (previous.metadata if previous is not None else {}),
        expires_us=expires,
    )
    return record, previous


def plan_incr(op: IncrOp, stored: Record | None, now_us: int) -> tuple[Record, Record | None]:
    previous = stored if is_live(stored, now_us) else None
    current: Any = 0 if previous is None else loads(previous.data_json)
    if isinstance(current, bool) or not isinstance(current, int | float):
        raise NotANumber(
            f"key {op.key!r} holds a non-numeric value", details={"key": op.key, "value": current}
        )
    total = current + op.by
    if (isinstance(total, int) and not INT_MIN <= total <= INT_MAX) or (
        isinstance(total, float) and not math.isfinite(total)
    ):
        raise OutOfRange(
            f"incrementing {op.key!r} by {op.by} leaves the representable range",
            details={"key": op.key, "value": current, "by": op.by},
        )
    set_op = SetOp(op.scope, op.scope_id, op.key, dumps(total))
    if previous is not None:
        set_op.ttl_seconds = (
            None if previous.expires_us is None else (previous.expires_us - now_us) / 1e6
        )
    return plan_set(set_op, stored, now_us)


def plan_delete(op: DeleteOp, stored: Record | None, now_us: int) -> tuple[bool, Record | None]:
    """(remove the row?, the record the delete event reports, or None for no event)."""
    live = is_live(stored, now_us)
    if op.expired_only:
        return (stored is not None and not live), (None if live else stored)
    if not live:
        # Absent, or expired (invisible already). A conditional delete still compares:
        # absent is version 0, like if_version on set. An expired row is reported as its
        # expiry (see removal_metadata), so the log keeps one removal event per set key.
        check_version(op.if_version, None, op.key)
        return stored is not None, stored
    check_version(op.if_version, stored, op.key)
    return True, stored


EXPIRED_METADATA = {"expired": True, "reason": "ttl"}


def removal_metadata(event_metadata: dict[str, Any], record: Record, now_us: int) -> dict[str, Any]:
    """A removal's event metadata, marked as an expiry when the record's TTL had passed:
    whoever removes an expired row (the purger, a delete, a clear) reports its expiry."""
    if is_live(record, now_us):
        return event_metadata
    return {**event_metadata, **EXPIRED_METADATA}


# -- vectors ---------------------------------------------------------------------------

VECTOR_EVENT_KIND = "vector"
"""``metadata["kind"]`` of a vector change event (a key-value event has no ``kind``)."""

StoredVector = tuple[int, dict[str, Any], int | None]
"""What a backend read of a vector row: ``(dim, metadata, created_us)`` (created may be
unknown, None, where only a delete needs the row)."""


@dataclass(slots=True)
class VectorChange:
    """What a vector op does: the event to log and the op's result."""

    action: str  # "set" or "delete"
    data: bytes | None
    previous: bytes | None
    metadata: dict[str, Any]
    result: VectorRecord | bool
    created_us: int


def vector_payload(dim: int, metadata: dict[str, Any] | None) -> bytes:
    """An event's ``data`` / ``previous_data`` for a vector: its metadata and dimension."""
    return dumps({"metadata": metadata or {}, "dimension": dim})


def vector_event_metadata(base: dict[str, Any]) -> dict[str, Any]:
    return {**base, "kind": VECTOR_EVENT_KIND}


def metadata_of(raw: Any) -> dict[str, Any]:
    """Stored metadata (JSON text or bytes, or already decoded) as a dict."""
    if not raw:
        return {}
    return raw if isinstance(raw, dict) else loads(raw)  # type: ignore[no-any-return]


def dimension_mismatch(scope: str, scope_id: str, expected: int, got: int) -> DimensionMismatch:
    return DimensionMismatch(
        f"embedding has {got} dimensions; scope '{scope}' holds {expected}-dimensional vectors",
        details={"scope": scope, "scope_id": scope_id, "expected": expected, "got": got},
    )


def plan_vector(
    op: VectorSetOp | VectorDeleteOp, stored: StoredVector | None, other_dim: int | None, ts: int
) -> VectorChange | None:
    """The outcome of ``op`` given the key's stored row and the dimension of another key
    of its scope (all keys of a scope share one); None when a delete finds nothing.
    Raises :class:`DimensionMismatch` for a set of another dimension."""
    meta = vector_event_metadata(op.event_metadata)
    previous = vector_payload(stored[0], stored[1]) if stored is not None else None
    if isinstance(op, VectorDeleteOp):
        if stored is None:
            return None
        return VectorChange("delete", None, previous, meta, True, stored[2] or ts)
    dim = len(op.embedding)
    if other_dim is not None and other_dim != dim:
        raise dimension_mismatch(op.scope, op.scope_id, other_dim, dim)
    created = stored[2] if stored is not None and stored[2] is not None else ts
    record = VectorRecord(op.scope, op.scope_id, op.key, op.metadata, created, ts)
    return VectorChange("set", vector_payload(dim, op.metadata), previous, meta, record, created)
