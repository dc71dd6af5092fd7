"""The embedded backend, whole: the store (``store.py``), its writer (``writer.py``, in a
thread or in the writer process of ``writer_process.py``), the WAL syncer
(``wal_sync.py``) and the read cache (``read_cache.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .store import SQLiteStore


def __getattr__(name: str) -> object:
    # On first use: the writer process imports this package and must start without the
    # store's own imports (databases, the read side).
    if name == "SQLiteStore":
        from .store import SQLiteStore

        return SQLiteStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["SQLiteStore"]
