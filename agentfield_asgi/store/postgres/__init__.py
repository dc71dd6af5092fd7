"""The PostgreSQL backend, whole: the store (``store.py``), its group commit
(``group_commit.py``), the event feed (``feed.py``) and its vector part, exact search
in memory or pgvector (``vectors.py``)."""

from __future__ import annotations

from .store import APPLICATION_NAME, PostgresStore

__all__ = ["APPLICATION_NAME", "PostgresStore"]
