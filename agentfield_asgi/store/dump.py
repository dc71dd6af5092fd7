"""The dump's rows: what both backends share for export and import (each backend reads
and loads them in its own ``dump.py``).

What both backends share for export and import (``agentfield_asgi/portability.py`` turns
these rows into JSON lines and back, over the Store interface):

* :data:`TABLES`: the dumped tables and their columns, in row order;
* rows travel *normalised*: JSON columns as UTF-8 bytes (or None), embeddings as bytes,
  numbers as ints, whichever backend they come from or go to;
* a load inserts rows as they are (versions, timestamps, TTLs, event ids kept) and leaves
  rows already present alone, so running an import twice changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

DumpRow = tuple[Any, ...]

TABLES: dict[str, tuple[str, ...]] = {
    "memory": (
        "scope",
        "scope_id",
        "key",
        "value",
        "created_us",
        "updated_us",
        "version",
        "metadata",
        "expires_us",
    ),
    "vectors": (
        "scope",
        "scope_id",
        "key",
        "dim",
        "embedding",
        "metadata",
        "created_us",
        "updated_us",
    ),
    "events": ("id", "ts_us", "scope", "scope_id", "key", "action", "data", "previous", "metadata"),
}
"""Dumped tables (in dump order) and their columns (in row order)."""

JSON_COLUMNS: dict[str, frozenset[int]] = {
    "memory": frozenset({3, 7}),
    "vectors": frozenset({5}),
    "events": frozenset({6, 7, 8}),
}
"""Positions of the JSON columns of each table's rows."""

ORDER = {"memory": "scope, scope_id, key", "vectors": "scope, scope_id, key", "events": "id"}


def select_sql(table: str) -> str:
    return f"SELECT {', '.join(TABLES[table])} FROM {table} ORDER BY {ORDER[table]}"


def normalise(table: str, row: Sequence[Any]) -> DumpRow:
    json_at = JSON_COLUMNS[table]
    return tuple(
        v.encode()
        if i in json_at and isinstance(v, str)
        else bytes(v)
        if isinstance(v, memoryview)
        else v
        for i, v in enumerate(row)
    )
