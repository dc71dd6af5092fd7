"""All configuration in one dataclass, read once from arguments or ``AGENTFIELD_*``.

Nothing below this module reads the environment: the settings object is passed down.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from typing import Any

DEFAULT_DATABASE_URL = "sqlite:///./agentfield.db"


def _split(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


@dataclass(frozen=True)
class Settings:
    """Server settings. Each field may be given as ``AGENTFIELD_<FIELD NAME IN CAPS>``."""

    database_url: str = DEFAULT_DATABASE_URL
    sqlite_synchronous: str = "FULL"
    """``FULL`` (default: every acknowledged write is on disk; the WAL is fsynced off the
    writer thread, see ``store/sqlite/wal_sync.py``), ``EXTRA`` (the same, with SQLite's own fsync
    inside each COMMIT) or ``NORMAL`` (faster; a power loss may drop the last commits, a
    process crash does not)."""
    sqlite_writer: str = "process"
    """Where SQLite writes are made: ``process`` (default: a writer process of its own, so
    that its work does not wait for the server's GIL; see ``store/sqlite/writer_process.py``) or
    ``thread`` (a thread of the server's process: one process fewer, slower under load)."""
    pg_pool_min: int = 2
    pg_pool_max: int = 10
    max_value_bytes: int = 1024 * 1024
    max_key_bytes: int = 1024
    max_json_depth: int = 64
    max_batch_ops: int = 1000
    """Operations in one ``/memory/batch`` (and keys in one ``/memory/get_many``)."""
    max_batch_bytes: int = 16 * 1024 * 1024
    """Request body limit of ``/memory/batch`` (each value is still at most ``max_value_bytes``)."""
    api_keys: tuple[str, ...] = ()
    api_keys_file: str | None = None
    """A JSON or TOML file of API keys with per-scope permissions (``docs/operations.md``);
    validated at start, reloaded on SIGHUP. Its keys are accepted besides ``api_keys``."""
    observability: bool = True
    """Prometheus metrics and OpenTelemetry spans, when their extras are installed; false
    leaves both out (the benchmark's baseline, see ``docs/operations.md``)."""
    metrics_public: bool = False
    """Serve ``/metrics`` without an API key even when keys are configured (for a scraper on a
    private network)."""
    cors_origins: tuple[str, ...] = ()
    event_retention_seconds: float | None = 7 * 24 * 3600.0
    event_retention_count: int | None = 1_000_000
    workflow_retention_seconds: float = 0.0
    """How long a completed workflow's memory is kept (0: removed at completion)."""
    subscriber_queue_size: int = 1000
    max_subscribers_per_client: int = 256
    max_patterns: int = 64
    history_max_limit: int = 1000
    sse_ping_seconds: float = 15.0
    sse_send_timeout_seconds: float = 30.0
    ttl_purge_interval_seconds: float = 1.0
    compaction_interval_seconds: float = 60.0
    vector_metric: str = "cosine"
    """Similarity for vector search: ``cosine`` (default), ``dot`` or ``l2``."""
    vector_blas_threads: int = 1
    """Threads numpy's BLAS may use to score vectors (set process-wide at start; 0 leaves it
    alone). A search is a memory-bound matrix-vector product: one thread is as fast, and on a
    busy machine multi-threaded BLAS waits for cores other work holds."""
    ui_allow_edit: bool = False
    mcp: bool = False
    """Serve the Model Context Protocol (Streamable HTTP) at ``/mcp`` (``AGENTFIELD_MCP``;
    needs the ``[mcp]`` extra)."""
    mcp_session_per_client: bool = False
    """Each MCP session gets a session id of its own (``mcp-<hex>``) for calls whose request
    carries no ``X-Session-ID``: unscoped writes then go to that session's memory."""
    execute_timeout_seconds: float = 300.0
    """How long ``execute`` (and ``Agent.call``) waits for the called reasoner: also the
    deadline of an execution a node answered 202 for (failed when no status came by then)."""
    node_inactive_after_seconds: float = 30.0
    """A node that heartbeats is ``inactive`` once its last heartbeat is this old."""
    control_plane_url: str | None = None
    """Where an agent node finds the control plane (``AGENTFIELD_CONTROL_PLANE_URL``)."""
    public_url: str | None = None
    """The URL at which the control plane reaches this agent node (``AGENTFIELD_PUBLIC_URL``)."""
    client_timeout_seconds: float = 10.0
    """Timeout of each SDK memory call."""

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then ``AGENTFIELD_*`` variables, then explicit non-None ``overrides``."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"AGENTFIELD_{f.name.upper()}")
            if raw is None:
                continue
            values[f.name] = _coerce(f.type, raw)
        if "api_keys" not in values and env.get("AGENTFIELD_API_KEY"):
            values["api_keys"] = _split(env["AGENTFIELD_API_KEY"])
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise TypeError(f"unknown settings: {sorted(unknown)}")
        return cls(**values)

    def with_updates(self, **changes: Any) -> Settings:
        return replace(self, **changes)


def _coerce(annotation: Any, raw: str) -> Any:
    kind = str(annotation)
    if "tuple" in kind:
        return _split(raw)
    if kind.startswith("bool"):
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if "None" in kind and raw.strip().lower() in ("", "none", "off"):
        return None
    if "int" in kind and "float" not in kind:
        return int(raw)
    if "float" in kind:
        return float(raw)
    return raw


__all__ = ["DEFAULT_DATABASE_URL", "Settings"]
