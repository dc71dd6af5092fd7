"""Helpers to run real servers on loopback: a throwaway PostgreSQL and the memory
service in a subprocess. Used by the test suite and by ``agentfield-asgi bench``."""

from .postgres import PostgresUnavailable, ThrowawayPostgres, pgvector_bindir
from .servers import (
    ServerProcess,
    agent_server,
    asgi_client,
    free_port,
    rss_kib,
    sqlite_writer_pids,
)
from .waits import wait_until

__all__ = [
    "PostgresUnavailable",
    "ServerProcess",
    "ThrowawayPostgres",
    "agent_server",
    "asgi_client",
    "free_port",
    "pgvector_bindir",
    "rss_kib",
    "sqlite_writer_pids",
    "wait_until",
]
