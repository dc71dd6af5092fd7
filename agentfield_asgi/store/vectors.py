"""Vector memory per backend. (Interim: vectors are not implemented yet; see issue 9.)"""

from __future__ import annotations

from typing import Any

from ..errors import AgentFieldError


class VectorsUnavailable(AgentFieldError):
    status = 501
    code = "not_implemented"


async def attach_sqlite_vectors(store: Any) -> None:
    store._vectors = None


async def attach_postgres_vectors(store: Any) -> None:
    """PostgreSQL's vector part (none yet). The store calls, with ``store._vectors`` set:
    ``await apply_in_tx(conn, op, ts, events, log)`` and ``await clear_in_tx(...)`` while
    planning a group (asyncpg connection inside the group's transaction; ``log`` has the
    SQLite ``_log`` signature and queues the event row), ``apply_committed(ops, results)``
    after COMMIT, and ``await search(...)``."""
    store._vectors = None
