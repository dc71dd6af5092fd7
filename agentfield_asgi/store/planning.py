"""Deciding a group of writes in memory, so a backend writes it in bulk.

Both backends commit groups of units in one transaction. Instead of a round of SQL
per op, they read the current row of every key the group touches at once, decide
each unit with :mod:`semantics` against that state (a unit that fails, e.g. on
``if_version``, is dropped alone, before any SQL), then write the final row of each
touched key and the events, in unit order, with a statement or two.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol, TypeVar

from . import semantics
from .base import DeleteOp, IncrOp, Record, SetOp, WriteOp

Key = tuple[str, str, str]
PlannedEvent = tuple[int, str, str, str, str, bytes | None, bytes | None, dict[str, Any]]
"""``(ts_us, scope, scope_id, key, action, data, previous, metadata)``: an event row
without its id, which the database gives it."""

POINT_OPS = (SetOp, IncrOp, DeleteOp)

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class _Queue(Protocol[T_co]):
    """``queue.SimpleQueue`` or ``asyncio.Queue``, read by one consumer."""

    def empty(self) -> bool: ...

    def get_nowait(self) -> T_co | None: ...


def take_queued(source: _Queue[T], first: T, limit: int | None = None) -> tuple[list[T], bool]:
    """A writer's next group: ``first`` and whatever else is queued now (up to ``limit``),
    without waiting; True with it when the stop marker (None) was among them."""
    items = [first]
    while (limit is None or len(items) < limit) and not source.empty():
        item = source.get_nowait()
        if item is None:
            return items, True
        items.append(item)
    return items, False


def is_point_unit(ops: Sequence[WriteOp]) -> bool:
    """True when every op names one key (set, incr, delete): a unit :class:`Plan` decides."""
    return all(isinstance(op, POINT_OPS) for op in ops)


def touched_keys(units: Iterable[Sequence[WriteOp]]) -> list[Key]:
    """Every key the point ops of ``units`` touch, once each."""
    keys: dict[Key, None] = {}
    for ops in units:
        for op in ops:
            if isinstance(op, POINT_OPS):
                keys[(op.scope, op.scope_id, op.key)] = None
    return list(keys)


def state_of(records: Iterable[Record]) -> dict[Key, Record | None]:
    """A :class:`Plan`'s starting state: ``records`` (rows read up front) by key."""
    return {(r.scope, r.scope_id, r.key): r for r in records}


class Plan:
    """Each touched key's row as the units planned so far leave it, and what to write."""

    __slots__ = ("events", "final", "state")

    def __init__(self, state: dict[Key, Record | None]) -> None:
        self.state = state
        """Rows as of now in this plan (None: deleted); read from the database up front."""
        self.final: dict[Key, Record | None] = {}
        """Rows to write (None: delete the row)."""
        self.events: list[PlannedEvent] = []

    @property
    def empty(self) -> bool:
        return not self.final and not self.events

    def current(self, key: Key, changes: dict[Key, Record | None]) -> Record | None:
        return changes[key] if key in changes else self.state.get(key)

    def unit(self, ops: Sequence[WriteOp], ts: int) -> tuple[list[Any], list[PlannedEvent]]:
        """Decide a unit of point ops: all join the plan, or (raising) none does."""
        changes: dict[Key, Record | None] = {}
        events: list[PlannedEvent] = []
        results = [self.point(op, ts, changes, events) for op in ops]
        self.merge(changes, events)
        return results, events

    def merge(self, changes: dict[Key, Record | None], events: list[PlannedEvent]) -> None:
        self.state.update(changes)
        self.final.update(changes)
        self.events.extend(events)

    def point(
        self,
        op: WriteOp,
        ts: int,
        changes: dict[Key, Record | None],
        events: list[PlannedEvent],
    ) -> Any:
        """Decide one set, incr or delete into ``changes`` and ``events``; its result."""
        if isinstance(op, SetOp | IncrOp):
            key = (op.scope, op.scope_id, op.key)
            plan = semantics.plan_set if isinstance(op, SetOp) else semantics.plan_incr
            record, previous = plan(op, self.current(key, changes), ts)  # type: ignore[arg-type]
            changes[key] = record
            before = previous.data_json if previous is not None else None
            events.append((ts, *key, "set", record.data_json, before, op.event_metadata))
            return record
        if isinstance(op, DeleteOp):
            key = (op.scope, op.scope_id, op.key)
            remove, reported = semantics.plan_delete(op, self.current(key, changes), ts)
            if remove:
                changes[key] = None
            if reported is not None:
                meta = semantics.removal_metadata(op.event_metadata, reported, ts)
                events.append((ts, *key, "delete", None, reported.data_json, meta))
            return reported
        raise TypeError(f"not a point op: {op!r}")

    def rows(self) -> tuple[list[Record], list[Key]]:
        """(rows to insert or replace, keys to delete)."""
        upserts = [r for r in self.final.values() if r is not None]
        gone = [k for k, r in self.final.items() if r is None]
        return upserts, gone
