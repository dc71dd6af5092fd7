"""Storage backends behind one :class:`~agentfield_asgi.store.base.Store` interface."""

from __future__ import annotations

from urllib.parse import urlsplit

from ..settings import Settings
from .base import SCOPES, Event, EventFilter, Record, Store


def open_store(settings: Settings) -> Store:
    """The backend for ``settings.database_url`` (not yet opened): ``sqlite:///path`` or
    ``postgresql://...``."""
    url = settings.database_url
    scheme = urlsplit(url).scheme.split("+")[0]
    if scheme == "sqlite":
        from .sqlite import SQLiteStore

        path = url.split(":///", 1)[1] if ":///" in url else ""
        if not path:
            raise ValueError(f"sqlite URL needs a path: {url!r} (e.g. sqlite:///./agentfield.db)")
        return SQLiteStore(
            path, synchronous=settings.sqlite_synchronous, writer=settings.sqlite_writer
        )
    if scheme in ("postgresql", "postgres"):
        from .postgres import PostgresStore

        return PostgresStore(url, min_size=settings.pg_pool_min, max_size=settings.pg_pool_max)
    raise ValueError(f"unsupported database URL scheme {scheme!r}; use sqlite:/// or postgresql://")


__all__ = ["SCOPES", "Event", "EventFilter", "Record", "Store", "open_store"]
