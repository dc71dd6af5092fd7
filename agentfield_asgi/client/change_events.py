"""What subscriptions deliver and how they filter: the SDK's change-event value objects."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..patterns import InvalidPattern, parse_patterns
from ..store.base import SCOPES


@dataclass(frozen=True, slots=True)
class MemoryChangeEvent:
    """One change to memory, as the protocol's event object (``id`` is the wire's string;
    ids compare correctly as integers)."""

    id: str
    type: str
    timestamp: str
    scope: str
    scope_id: str
    key: str
    action: str
    data: Any = None
    previous_data: Any = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> MemoryChangeEvent:
        return cls(
            id=str(body["id"]),
            type=body.get("type", "memory_change"),
            timestamp=body.get("timestamp", ""),
            scope=body["scope"],
            scope_id=body["scope_id"],
            key=body["key"],
            action=body["action"],
            data=body.get("data"),
            previous_data=body.get("previous_data"),
            metadata=dict(body.get("metadata") or {}),
        )

    @property
    def seq(self) -> int:
        """The id as an integer."""
        return int(self.id)


@dataclass(frozen=True, slots=True)
class StreamReset:
    """The server no longer had every event after the resume point (``reason``:
    ``"compacted"`` by retention, or ``"unknown_id"``); delivery goes on after
    ``resume_from``. Events in between were lost to this subscriber."""

    reason: str
    resume_from: str


@dataclass(frozen=True, slots=True)
class Filter:
    """Which events a subscription or history call wants."""

    patterns: tuple[str, ...] = ()
    scope: str | None = None
    scope_id: str | None = None

    def params(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.patterns:
            out["patterns"] = ",".join(self.patterns)
        if self.scope:
            out["scope"] = self.scope
        if self.scope_id:
            out["scope_id"] = self.scope_id
        return out


def make_filter(
    patterns: str | Sequence[str] | None, scope: str | None, scope_id: str | None
) -> Filter:
    """Validate patterns (same rules as the server) and scope up front, so a mistake fails
    at the decorator rather than in a background reconnect loop."""
    if isinstance(patterns, str):
        patterns = [patterns]
    try:
        parsed = parse_patterns(list(patterns or ()))
    except InvalidPattern as exc:
        raise ValueError(exc.message) from None
    if scope is not None and scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; expected one of {', '.join(SCOPES)}")
    return Filter(parsed, scope, scope_id)


__all__ = ["Filter", "MemoryChangeEvent", "StreamReset", "make_filter"]
