"""Export and import: the whole memory as JSON lines, over the Store interface.

``agentfield-asgi export --database-url URL > dump.jsonl`` and
``agentfield-asgi import --database-url URL < dump.jsonl``. A dump is one JSON object a
line:

* first a ``header`` (``format``, ``dump_version``, ``schema_version``, ``source``,
  ``created_at``, ``tables``);
* then every ``record`` (value as JSON, version, created/updated/expiry times in
  microseconds, metadata), every ``vector`` (``embedding_b64``: float32 little-endian,
  base64) and, with ``--events``, every ``event`` of the change log, all read from one
  snapshot of the database while writes go on;
* last an ``end`` line with the counts (a dump without it was cut short).

Both directions stream in batches, so memory stays flat however large the database.
An import keeps versions, timestamps, TTLs and event ids, leaves rows already present
alone (running it again changes nothing), and refuses a dump made by a newer schema.
"""

from __future__ import annotations

import base64
import sys
from collections.abc import Callable, Iterable
from typing import IO, Any

from .codec import Fragment, dumps, format_ts, loads, now_us
from .store.base import Store
from .store.dump import TABLES
from .store.schema import SCHEMA_VERSION

FORMAT = "agentfield-asgi-dump"
DUMP_VERSION = 1
BATCH_ROWS = 1000
PROGRESS_EVERY = 50_000

KIND = {"memory": "record", "vectors": "vector", "events": "event"}
TABLE = {kind: table for table, kind in KIND.items()}
Progress = Callable[[str], None]


class DumpError(ValueError):
    """The dump cannot be imported (not a dump, from a newer schema, malformed, cut short)."""


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- rows <-> lines

_OPTIONAL_JSON = {"memory": ("metadata",), "vectors": ("metadata",)}


def encode_row(table: str, row: tuple[Any, ...]) -> bytes:
    """One dump line (with its newline) for a row of ``table``."""
    item: dict[str, Any] = {"type": KIND[table]}
    for name, value in zip(TABLES[table], row, strict=True):
        if value is None:
            continue  # absent means NULL (a stored JSON null is the text "null")
        if name == "value":
            item["data"] = Fragment(value)
        elif name in ("data", "previous", "metadata"):
            item[name] = Fragment(value)
        elif name == "embedding":
            item["embedding_b64"] = base64.b64encode(value).decode("ascii")
        else:
            item[name] = value
    return dumps(item) + b"\n"


_INT_COLUMNS = {"created_us", "updated_us", "version", "expires_us", "dim", "id", "ts_us"}
_REQUIRED = {
    "memory": ("scope", "scope_id", "key", "value", "created_us", "updated_us", "version"),
    "vectors": ("scope", "scope_id", "key", "dim", "embedding", "created_us", "updated_us"),
    "events": ("id", "ts_us", "scope", "scope_id", "key", "action"),
}


def decode_item(table: str, item: dict[str, Any]) -> tuple[Any, ...]:
    """The row of ``table`` a dump line holds; ``DumpError`` when a field is missing or
    of the wrong type."""
    row: list[Any] = []
    for name in TABLES[table]:
        field = {"value": "data", "embedding": "embedding_b64"}.get(name, name)
        if field not in item:
            if name in _REQUIRED[table]:
                raise DumpError(f"{KIND[table]} without {field!r}")
            row.append(None)
            continue
        value = item[field]
        if name == "embedding":
            if not isinstance(value, str):
                raise DumpError("'embedding_b64' must be a base64 string")
            try:
                value = base64.b64decode(value, validate=True)
            except ValueError as exc:
                raise DumpError(f"'embedding_b64' is not base64: {exc}") from None
        elif name in ("value", "data", "previous", "metadata"):
            value = dumps(value)
        elif name in _INT_COLUMNS:
            if not isinstance(value, int) or isinstance(value, bool):
                raise DumpError(f"{field!r} must be an integer")
        elif not isinstance(value, str):
            raise DumpError(f"{field!r} must be a string")
        row.append(value)
    return tuple(row)


# ---------------------------------------------------------------- export


async def export_dump(
    store: Store, out: IO[bytes], *, events: bool = False, progress: Progress = _stderr
) -> dict[str, int]:
    """Write the whole of ``store`` (an opened store) to ``out`` as a dump; returns the
    counts by kind."""
    tables = [t for t in TABLES if events or t != "events"]
    header = {
        "type": "header",
        "format": FORMAT,
        "dump_version": DUMP_VERSION,
        "schema_version": SCHEMA_VERSION,
        "source": store.kind,
        "created_at": format_ts(now_us()),
        "tables": [KIND[t] for t in tables],
    }
    out.write(dumps(header) + b"\n")
    counts = {KIND[t]: 0 for t in tables}
    done = 0
    async for table, rows in store.snapshot(tables, BATCH_ROWS):
        out.write(b"".join(encode_row(table, row) for row in rows))
        counts[KIND[table]] += len(rows)
        done = _report(progress, "exported", done, len(rows), counts)
    out.write(dumps({"type": "end", "counts": counts}) + b"\n")
    out.flush()
    progress("exported " + _summary(counts))
    return counts


# ---------------------------------------------------------------- import


def check_header(item: Any) -> dict[str, Any]:
    """The dump's header line, validated: ``DumpError`` for anything this version cannot
    import (not a dump, a newer dump format or schema)."""
    if not isinstance(item, dict) or item.get("type") != "header" or item.get("format") != FORMAT:
        raise DumpError(f"not an agentfield-asgi dump (the first line must be its {FORMAT} header)")
    dump_version, schema = item.get("dump_version"), item.get("schema_version")
    if not isinstance(dump_version, int) or not isinstance(schema, int):
        raise DumpError("the dump header has no integer dump_version / schema_version")
    if dump_version > DUMP_VERSION or schema > SCHEMA_VERSION:
        raise DumpError(
            f"the dump was made by a newer agentfield-asgi (dump format {dump_version}, schema "
            f"{schema}); this one reads format {DUMP_VERSION}, schema {SCHEMA_VERSION} at "
            "most: upgrade agentfield-asgi to import it"
        )
    return item


async def import_dump(
    store: Store, lines: Iterable[bytes], *, progress: Progress = _stderr
) -> dict[str, int]:
    """Load a dump into ``store`` (an opened store); returns the counts read by kind (plus
    ``new``: rows that were not there yet). ``DumpError`` on a bad or cut-short dump (the
    batches before the bad line stay loaded: importing again is harmless)."""
    numbered = enumerate(lines, 1)
    first = next(numbered, None)
    if first is None:
        raise DumpError("the dump is empty")
    check_header(_parse(first[1], 1))
    counts: dict[str, int] = {}
    new = done = 0
    pending: list[tuple[Any, ...]] = []
    pending_table = ""
    ended = False
    for number, line in numbered:
        if not line.strip():
            continue
        item = _parse(line, number)
        if ended:
            raise DumpError(f"line {number}: data after the end line")
        kind = item.get("type")
        if kind == "end":
            ended = True
            continue
        table = TABLE.get(kind) if isinstance(kind, str) else None
        if table is None:
            raise DumpError(f"line {number}: unknown line type {kind!r}")
        try:
            row = decode_item(table, item)
        except DumpError as exc:
            raise DumpError(f"line {number}: {exc}") from None
        if pending and (table != pending_table or len(pending) >= BATCH_ROWS):
            new += await store.load(pending_table, pending)
            done = _report(progress, "imported", done, len(pending), counts)
            pending = []
        pending_table = table
        pending.append(row)
        counts[KIND[table]] = counts.get(KIND[table], 0) + 1
    if pending:
        new += await store.load(pending_table, pending)
    if not ended:
        raise DumpError("the dump is cut short (no end line); what was read is imported")
    progress(f"imported {_summary(counts)} ({new} new rows)")
    return {**counts, "new": new}


def _parse(line: bytes, number: int) -> dict[str, Any]:
    try:
        item = loads(line)
    except ValueError as exc:
        raise DumpError(f"line {number}: not JSON ({exc})") from None
    if not isinstance(item, dict):
        raise DumpError(f"line {number}: not a JSON object")
    return item


def _summary(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {kind}s" for kind, n in counts.items()) or "nothing"


def _report(progress: Progress, verb: str, done: int, added: int, counts: dict[str, int]) -> int:
    """Progress every :data:`PROGRESS_EVERY` rows; returns the new running total."""
    total = done + added
    if total // PROGRESS_EVERY > done // PROGRESS_EVERY:
        progress(f"{verb} {total} rows so far ({_summary(counts)})")
    return total


__all__ = ["DUMP_VERSION", "FORMAT", "DumpError", "export_dump", "import_dump"]


# ---------------------------------------------------------------- the commands


def run_command(command: str, database_url: str | None, *, events: bool = False) -> int:
    """``agentfield-asgi export`` (dump to stdout) or ``import`` (from stdin); the exit
    status: 0 done, 2 refused (bad settings or dump), 1 storage failure."""
    import asyncio
    import os

    from .errors import AgentFieldError
    from .settings import Settings
    from .store import open_store

    try:
        store = open_store(Settings.from_env(database_url=database_url))
    except (TypeError, ValueError) as exc:
        return _fail(f"invalid settings: {exc}")
    path = getattr(store, "path", None)
    if command == "export" and path is not None and not os.path.exists(path):
        return _fail(f"no database at {path}")

    async def run() -> None:
        await store.open()
        try:
            if command == "export":
                await export_dump(store, sys.stdout.buffer, events=events)
            else:
                await import_dump(store, sys.stdin.buffer)
        finally:
            await store.close()

    try:
        asyncio.run(run())
    except DumpError as exc:
        return _fail(str(exc))
    except AgentFieldError as exc:
        _stderr(f"agentfield-asgi {command}: error: {exc.message}")
        return 1
    return 0


def _fail(message: str) -> int:
    _stderr(f"agentfield-asgi: error: {message}")
    return 2
