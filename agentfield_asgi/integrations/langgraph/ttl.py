"""LangGraph's TTL (minutes, per item, refreshed on read) on our TTL (``ttl_seconds``).

A put with a TTL is a ``set`` with ``ttl_seconds = minutes * 60``; the record keeps
the minutes in its ``metadata`` (``langgraph_ttl_minutes``) so a later read can
refresh the expiry. The server never returns an expired record, purged or not.
Refreshing is a compare-and-set rewrite of the same value with a fresh TTL
(``if_version`` = the version read), so it never overwrites a newer write.
"""

from __future__ import annotations

from typing import Any

from langgraph.store.base import NOT_PROVIDED, NotProvided, TTLConfig

TTL_METADATA = "langgraph_ttl_minutes"


def ttl_minutes(config: TTLConfig | None, ttl: float | NotProvided | None) -> float | None:
    """The TTL of a put: its own, else the configured ``default_ttl``, else none."""
    if ttl is NOT_PROVIDED or isinstance(ttl, NotProvided):
        return None if config is None else config.get("default_ttl")
    if ttl is not None and not ttl > 0:
        raise ValueError(f"ttl must be a positive number of minutes or None, not {ttl!r}")
    return ttl


def refresh_default(config: TTLConfig | None, refresh: bool | None) -> bool:
    """Whether a read refreshes TTLs: the op's choice, else ``refresh_on_read`` (default on)."""
    if refresh is not None:
        return refresh
    return True if config is None else bool(config.get("refresh_on_read", True))


def set_fields(minutes: float | None) -> dict[str, Any]:
    """The optional fields of a ``set`` carrying a TTL (empty without one)."""
    if minutes is None:
        return {}
    return {"ttl_seconds": minutes * 60.0, "metadata": {TTL_METADATA: minutes}}


def record_minutes(record: dict[str, Any]) -> float | None:
    """The TTL (minutes) a stored record was written with, if any."""
    metadata = record.get("metadata")
    if not isinstance(metadata, dict) or "expires_at" not in record:
        return None
    minutes = metadata.get(TTL_METADATA)
    return minutes if isinstance(minutes, int | float) and minutes > 0 else None
