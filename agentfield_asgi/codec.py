"""JSON and timestamp encoding shared by server, store and client.

orjson everywhere: stdlib ``json`` is a visible share of a request's profile at
the rates we serve. Values travel as compact JSON bytes from the request body to
the database and back, so the hot path never re-encodes a stored value.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson

Fragment = orjson.Fragment
JSONDecodeError = orjson.JSONDecodeError


def dumps(value: Any) -> bytes:
    """Compact JSON bytes (UTF-8, no spaces)."""
    return orjson.dumps(value)


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)


def now_us() -> int:
    """Wall-clock time in integer microseconds since the Unix epoch (UTC)."""
    return time.time_ns() // 1000


def format_ts(us: int) -> str:
    """Microseconds since the epoch -> RFC 3339 UTC with a ``Z`` suffix."""
    seconds, micros = divmod(us, 1_000_000)
    return f"{_format_second(seconds)}.{micros:06d}Z"


@lru_cache(maxsize=256)
def _format_second(seconds: int) -> str:
    # Records written together share their second: most calls are cache hits.
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def parse_ts(text: str) -> int:
    """RFC 3339 (with ``Z``, an offset, or naive meaning UTC) -> microseconds since the epoch.

    Raises ``ValueError`` for anything else.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("empty timestamp")
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    delta = parsed - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
