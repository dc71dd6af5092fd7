"""PostgreSQL connections: how they are set up, and what a failure means.

:data:`UNAVAILABLE` is "the database cannot serve us now" (503); a failure during COMMIT
leaves the outcome unknown (:class:`OutcomeUnknown`); a connection that failed is
discarded rather than handed out again.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from asyncpg import exceptions as pgerr

from ...errors import INVALID_VALUE, BadRequest
from .group_commit import EVENT_LOCK, UNLOCK_SQL

UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    pgerr.OperatorInterventionError,  # admin shutdown, cannot connect now (starting up)
    pgerr.InsufficientResourcesError,  # too many connections, disk full
    pgerr.InternalClientError,  # e.g. a query on a connection the server just terminated
)
"""Errors meaning "the database cannot serve us right now" (503), as opposed to a
statement the database rejected."""


def plain_url(url: str) -> str:
    """``postgres://`` or ``postgresql+driver://`` -> ``postgresql://`` (what asyncpg and
    ``databases`` both accept)."""
    return urlunsplit(urlsplit(url)._replace(scheme="postgresql"))


async def init_connection(conn: asyncpg.Connection) -> None:
    # JSONB travels as bytes both ways (binary format: a version byte, then the JSON text),
    # so stored values are never decoded to str or re-encoded.
    await conn.set_type_codec(
        "jsonb",
        schema="pg_catalog",
        encoder=lambda value: b"\x01" + value,
        decoder=lambda value: value[1:],
        format="binary",
    )


async def keep_session(conn: asyncpg.Connection) -> None:
    """Pool release hook: nothing to reset (asyncpg still rolls back an open transaction)."""


class OutcomeUnknown(Exception):
    """The connection failed during COMMIT: the transaction may have committed."""


LOST: tuple[type[BaseException], ...] = (*UNAVAILABLE, OutcomeUnknown)


def unit_error(exc: asyncpg.PostgresError) -> Exception:
    if isinstance(exc, pgerr.DataError):
        return BadRequest(f"the database rejected the value: {exc}", code=INVALID_VALUE)
    return exc


@contextlib.asynccontextmanager
async def discard_if_broken(conn: asyncpg.Connection) -> AsyncIterator[None]:
    """Close a pooled connection that failed, so the pool opens a fresh one instead of
    handing it out again."""
    try:
        yield
    except LOST:
        with contextlib.suppress(asyncpg.InterfaceError):  # already closed and returned
            conn.terminate()
        raise


async def commit(conn: asyncpg.Connection) -> None:
    try:
        await conn.execute("COMMIT")
    except UNAVAILABLE as exc:
        raise OutcomeUnknown(str(exc)) from exc


async def unlock(conn: asyncpg.Connection) -> None:
    """Release the session's writer lock; a connection that cannot is closed (which
    releases it too), never handed out again holding it."""
    if conn.is_closed():
        return
    try:
        await conn.execute(UNLOCK_SQL, EVENT_LOCK)
    except (*UNAVAILABLE, asyncpg.PostgresError):
        conn.terminate()


async def rollback(conn: asyncpg.Connection) -> None:
    if not conn.is_closed():
        with contextlib.suppress(*UNAVAILABLE, asyncpg.PostgresError):
            await conn.execute("ROLLBACK")
