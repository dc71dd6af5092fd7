"""SQL both backends share: the read queries, written once.

Queries are built with ``?`` placeholders; :class:`Dialect` numbers them (``$1``,
``$2``...) for PostgreSQL and says how a key is matched against a glob pattern
(a registered function on SQLite, the ``~`` regex operator on PostgreSQL; both
from :mod:`agentfield_asgi.patterns`, so they agree). Key columns compare as
bytes on both (SQLite's BINARY, PostgreSQL's ``COLLATE "C"``), so ordering and
``after_key`` paging agree too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ..codec import loads
from ..patterns import glob_to_regex
from .base import SCOPE_RANK, Event, EventFilter, Record, ScopeRef

RECORD_COLS = "scope, scope_id, key, value, created_us, updated_us, version, metadata, expires_us"
EVENT_COLS = "id, ts_us, scope, scope_id, key, action, data, previous, metadata"
RANK_SQL = "CASE scope " + " ".join(f"WHEN '{s}' THEN {r}" for s, r in SCOPE_RANK.items()) + " END"
LIVE_SQL = "(expires_us IS NULL OR expires_us > ?)"


@dataclass(frozen=True)
class Dialect:
    """What differs between the backends' SQL text."""

    name: str
    numbered: bool
    """``$1, $2...`` placeholders (PostgreSQL) instead of ``?``."""
    match_sql: str
    """Condition true when ``key`` matches the pattern parameter."""
    match_param: Callable[[str], str]
    """Glob pattern -> the parameter ``match_sql`` expects."""
    greatest: str

    def sql(self, text: str) -> str:
        return _numbered(text) if self.numbered else text


@lru_cache(maxsize=2048)
def _numbered(text: str) -> str:
    parts = text.split("?")
    return parts[0] + "".join(f"${i}{part}" for i, part in enumerate(parts[1:], 1))


SQLITE = Dialect("sqlite", False, "glob_match(?, key)", lambda p: p, "MAX")
"""SQLite: ``glob_match(pattern, key)`` is a function registered on each connection."""
POSTGRES = Dialect("postgresql", True, "key ~ ?", glob_to_regex, "GREATEST")

Query = tuple[str, list[Any]]


# ---------------------------------------------------------------- rows


def _text_bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def _json_or(value: str | bytes | None, default: Any) -> Any:
    return loads(value) if value else default


def record_from_row(row: Sequence[Any]) -> Record:
    """A :class:`Record` from a row of :data:`RECORD_COLS` (JSON as text or bytes)."""
    return Record(
        scope=row[0],
        scope_id=row[1],
        key=row[2],
        data_json=_text_bytes(row[3]),
        created_us=row[4],
        updated_us=row[5],
        version=row[6],
        metadata=_json_or(row[7], {}),
        expires_us=row[8],
    )


def event_from_row(row: Sequence[Any]) -> Event:
    """An :class:`Event` from a row of :data:`EVENT_COLS`."""
    return Event(
        id=row[0],
        ts_us=row[1],
        scope=row[2],
        scope_id=row[3],
        key=row[4],
        action=row[5],
        data_json=_text_bytes(row[6]) if row[6] is not None else None,
        previous_json=_text_bytes(row[7]) if row[7] is not None else None,
        metadata=_json_or(row[8], {}),
    )


# ---------------------------------------------------------------- records


@lru_cache(maxsize=64)
def _get_sql(d: Dialect, n: int) -> str:
    return d.sql(
        f"SELECT {RECORD_COLS} FROM memory WHERE key = ? AND ("
        + " OR ".join(["(scope = ? AND scope_id = ?)"] * n)
        + f") AND {LIVE_SQL} ORDER BY {RANK_SQL} LIMIT 1"
    )


def _chain_params(chain: Sequence[ScopeRef]) -> list[Any]:
    params: list[Any] = []
    for scope, scope_id in chain:
        params += [scope, scope_id]
    return params


def get_query(d: Dialect, key: str, chain: Sequence[ScopeRef], now: int) -> Query:
    """The first live record for ``key`` along ``chain``: one query, best scope first."""
    return _get_sql(d, len(chain)), [key, *_chain_params(chain), now]


def get_many_query(d: Dialect, keys: Sequence[str], chain: Sequence[ScopeRef], now: int) -> Query:
    """Live records of ``keys`` along ``chain``, lowest-priority scope first (so the best
    scope's row for a key comes last)."""
    conds = " OR ".join(["(scope = ? AND scope_id = ?)"] * len(chain))
    sql = (
        f"SELECT {RECORD_COLS} FROM memory WHERE key IN ({','.join('?' * len(keys))}) "
        f"AND ({conds}) AND {LIVE_SQL} ORDER BY {RANK_SQL} DESC"
    )
    return d.sql(sql), [*keys, *_chain_params(chain), now]


def list_query(
    d: Dialect,
    scope: str,
    scope_id: str,
    now: int,
    *,
    prefix: str | None,
    pattern: str | None,
    limit: int | None,
    after_key: str | None,
) -> Query:
    sql = f"SELECT {RECORD_COLS} FROM memory WHERE scope = ? AND scope_id = ? AND {LIVE_SQL}"
    params: list[Any] = [scope, scope_id, now]
    if prefix:
        # ``key >= prefix`` lets the primary key index start the scan at the prefix.
        sql += " AND key >= ? AND substr(key, 1, ?) = ?"
        params += [prefix, len(prefix), prefix]
    if pattern:
        sql += f" AND {d.match_sql}"
        params.append(d.match_param(pattern))
    if after_key is not None:
        sql += " AND key > ?"
        params.append(after_key)
    sql += " ORDER BY key"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return d.sql(sql), params


def scopes_query(d: Dialect, scope: str | None, limit: int) -> Query:
    sql = "SELECT scope, scope_id, COUNT(*) FROM memory"
    params: list[Any] = []
    if scope:
        sql += " WHERE scope = ?"
        params.append(scope)
    sql += f" GROUP BY scope, scope_id ORDER BY {RANK_SQL}, scope_id LIMIT ?"
    params.append(limit)
    return d.sql(sql), params


def expired_query(d: Dialect, now: int, limit: int) -> Query:
    sql = (
        "SELECT scope, scope_id, key FROM memory "
        "WHERE expires_us IS NOT NULL AND expires_us <= ? LIMIT ?"
    )
    return d.sql(sql), [now, limit]


# ---------------------------------------------------------------- events


def event_filter_sql(d: Dialect, flt: EventFilter | None, params: list[Any]) -> str:
    """Conditions for an event filter, each with a leading `` AND ``; appends to ``params``."""
    if flt is None:
        return ""
    parts = []
    if flt.scope:
        parts.append("scope = ?")
        params.append(flt.scope)
    if flt.scope_id:
        parts.append("scope_id = ?")
        params.append(flt.scope_id)
    if flt.patterns:
        parts.append("(" + " OR ".join([d.match_sql] * len(flt.patterns)) + ")")
        params += [d.match_param(p) for p in flt.patterns]
    return "".join(" AND " + p for p in parts)


def events_after_query(d: Dialect, after_id: int, limit: int, flt: EventFilter | None) -> Query:
    params: list[Any] = [after_id]
    where = event_filter_sql(d, flt, params)
    params.append(limit)
    return d.sql(f"SELECT {EVENT_COLS} FROM events WHERE id > ?{where} ORDER BY id LIMIT ?"), params


def history_query(
    d: Dialect, flt: EventFilter, *, since_us: int | None, since_id: int | None, limit: int
) -> Query:
    """Without ``since_id``: the newest ``limit`` matching events (at or after ``since_us``),
    oldest first. With ``since_id``: the first ``limit`` after it."""
    if since_id is not None:
        params: list[Any] = [since_id]
        where = "id > ?"
        if since_us is not None:
            where += " AND ts_us >= ?"
            params.append(since_us)
        where += event_filter_sql(d, flt, params)
        params.append(limit)
        return d.sql(f"SELECT {EVENT_COLS} FROM events WHERE {where} ORDER BY id LIMIT ?"), params
    params = [since_us or 0]
    where = "ts_us >= ?" + event_filter_sql(d, flt, params)
    params.append(limit)
    sql = (
        f"SELECT * FROM (SELECT {EVENT_COLS} FROM events WHERE {where} "
        "ORDER BY id DESC LIMIT ?) AS newest ORDER BY id"
    )
    return d.sql(sql), params


COMPACTED_THROUGH_SQL = "SELECT value FROM meta WHERE name = 'compacted_through'"
COMPACT_BY_AGE_SQL = "SELECT MAX(id) FROM events WHERE ts_us < ?"
COMPACT_BY_COUNT_SQL = "SELECT id FROM events ORDER BY id DESC LIMIT 1 OFFSET ?"
COMPACT_DELETE_SQL = "DELETE FROM events WHERE id <= ?"


def compacted_through_upsert(d: Dialect) -> str:
    """Raise the ``compacted_through`` mark to the parameter (never lower it)."""
    return d.sql(
        "INSERT INTO meta (name, value) VALUES ('compacted_through', ?) ON CONFLICT (name) "
        f"DO UPDATE SET value = {d.greatest}(meta.value, excluded.value)"
    )


# ---------------------------------------------------------------- control plane


def put_json_sql(d: Dialect, table: str, id_col: str) -> str:
    """Upsert ``(id, info JSON, updated_us)`` into a control-plane table."""
    return d.sql(
        f"INSERT INTO {table} ({id_col}, info, updated_us) VALUES (?, ?, ?) ON CONFLICT ({id_col}) "
        "DO UPDATE SET info = excluded.info, updated_us = excluded.updated_us"
    )


def put_execution_sql(d: Dialect) -> str:
    return d.sql(
        "INSERT INTO executions (execution_id, workflow_id, info, updated_us) "
        "VALUES (?, ?, ?, ?) ON CONFLICT (execution_id) "
        "DO UPDATE SET info = excluded.info, updated_us = excluded.updated_us"
    )


def finish_execution_sql(d: Dialect) -> str:
    """Store an ended execution only while its row has not ended: the first outcome stands,
    whichever instance records it."""
    status = "json_extract(info, '$.status')" if d.name == "sqlite" else "info->>'status'"
    return d.sql(
        "UPDATE executions SET info = ?, updated_us = ? WHERE execution_id = ? AND "
        f"{status} NOT IN ('succeeded', 'failed', 'cancelled', 'timeout')"
    )


GET_NODES_SQL = "SELECT info FROM nodes ORDER BY node_id"
GET_WORKFLOW_SQL = "SELECT info FROM workflows WHERE workflow_id = ?"
GET_EXECUTION_SQL = "SELECT info FROM executions WHERE execution_id = ?"
GET_EXECUTIONS_SQL = "SELECT info FROM executions WHERE workflow_id = ? ORDER BY updated_us"
