"""How long one write group took, as the backends report it to the metrics."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class GroupTiming:
    """One committed write group (group commit), passed to ``Store.group_observer``.

    ``commit_seconds`` and ``fsync_seconds`` are None where a backend cannot tell them
    apart honestly: the SQLite writer process commits with ``synchronous=FULL`` (its
    fsync is inside COMMIT, so inside ``commit_seconds``), and PostgreSQL flushes its WAL
    inside COMMIT on the server, out of the client's sight.
    """

    size: int
    """Units committed together in the group's one transaction."""
    seconds: float
    """From the group's first submitted unit until it was durable and answered."""
    commit_seconds: float | None = None
    """The group's transaction: from its first statement until COMMIT returned."""
    fsync_seconds: float | None = None
    """The fsync that made the committed group durable (SQLite writer thread only)."""
