"""Schema and forward migrations for both backends, applied through ``databases``.

``schema_version`` holds the newest applied migration. Each migration is a list
of statements per dialect; a store applies the ones it lacks, in order, at open.
Never edit a released migration: append a new one.
"""

from __future__ import annotations

import logging

from databases import Database

log = logging.getLogger("agentfield_asgi.store")

# (version, description, {"sqlite": [...], "postgresql": [...]})
MIGRATIONS: list[tuple[int, str, dict[str, list[str]]]] = [
    (
        1,
        "records, event log, meta, vectors, control plane",
        {
            "sqlite": [
                """CREATE TABLE memory (
                    scope TEXT NOT NULL, scope_id TEXT NOT NULL, key TEXT NOT NULL,
                    value TEXT NOT NULL, metadata TEXT,
                    created_us INTEGER NOT NULL, updated_us INTEGER NOT NULL,
                    version INTEGER NOT NULL, expires_us INTEGER,
                    PRIMARY KEY (scope, scope_id, key)) WITHOUT ROWID""",
                "CREATE INDEX memory_expires ON memory (expires_us) WHERE expires_us IS NOT NULL",
                """CREATE TABLE events (
                    id INTEGER PRIMARY KEY AUTOINCREMENT, ts_us INTEGER NOT NULL,
                    scope TEXT NOT NULL, scope_id TEXT NOT NULL, key TEXT NOT NULL,
                    action TEXT NOT NULL, data TEXT, previous TEXT, metadata TEXT)""",
                "CREATE INDEX events_ts ON events (ts_us)",
                "CREATE INDEX events_scope ON events (scope, scope_id, id)",
                "CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
                """CREATE TABLE vectors (
                    scope TEXT NOT NULL, scope_id TEXT NOT NULL, key TEXT NOT NULL,
                    dim INTEGER NOT NULL, embedding BLOB NOT NULL, metadata TEXT,
                    created_us INTEGER NOT NULL, updated_us INTEGER NOT NULL,
                    PRIMARY KEY (scope, scope_id, key)) WITHOUT ROWID""",
                """CREATE TABLE nodes (
                    node_id TEXT PRIMARY KEY, info TEXT NOT NULL, updated_us INTEGER NOT NULL)""",
                """CREATE TABLE executions (
                    execution_id TEXT PRIMARY KEY, workflow_id TEXT NOT NULL, info TEXT NOT NULL,
                    updated_us INTEGER NOT NULL)""",
                "CREATE INDEX executions_workflow ON executions (workflow_id)",
                """CREATE TABLE workflows (
                    workflow_id TEXT PRIMARY KEY, info TEXT NOT NULL,
                    updated_us INTEGER NOT NULL)""",
            ],
            "postgresql": [
                # COLLATE "C": keys order and compare as bytes, as on SQLite.
                """CREATE TABLE memory (
                    scope TEXT COLLATE "C" NOT NULL, scope_id TEXT COLLATE "C" NOT NULL,
                    key TEXT COLLATE "C" NOT NULL,
                    value JSONB NOT NULL, metadata JSONB,
                    created_us BIGINT NOT NULL, updated_us BIGINT NOT NULL,
                    version BIGINT NOT NULL, expires_us BIGINT,
                    PRIMARY KEY (scope, scope_id, key))""",
                "CREATE INDEX memory_expires ON memory (expires_us) WHERE expires_us IS NOT NULL",
                """CREATE TABLE events (
                    id BIGSERIAL PRIMARY KEY, ts_us BIGINT NOT NULL,
                    scope TEXT COLLATE "C" NOT NULL, scope_id TEXT COLLATE "C" NOT NULL,
                    key TEXT COLLATE "C" NOT NULL,
                    action TEXT NOT NULL, data JSONB, previous JSONB, metadata JSONB)""",
                "CREATE INDEX events_ts ON events (ts_us)",
                "CREATE INDEX events_scope ON events (scope, scope_id, id)",
                "CREATE TABLE meta (name TEXT PRIMARY KEY, value BIGINT NOT NULL)",
                """CREATE TABLE vectors (
                    scope TEXT NOT NULL, scope_id TEXT NOT NULL, key TEXT NOT NULL,
                    dim INTEGER NOT NULL, embedding BYTEA NOT NULL, metadata JSONB,
                    created_us BIGINT NOT NULL, updated_us BIGINT NOT NULL,
                    PRIMARY KEY (scope, scope_id, key))""",
                """CREATE TABLE nodes (
                    node_id TEXT PRIMARY KEY, info JSONB NOT NULL, updated_us BIGINT NOT NULL)""",
                """CREATE TABLE executions (
                    execution_id TEXT PRIMARY KEY, workflow_id TEXT NOT NULL, info JSONB NOT NULL,
                    updated_us BIGINT NOT NULL)""",
                "CREATE INDEX executions_workflow ON executions (workflow_id)",
                """CREATE TABLE workflows (
                    workflow_id TEXT PRIMARY KEY, info JSONB NOT NULL,
                    updated_us BIGINT NOT NULL)""",
            ],
        },
    ),
    (
        2,
        "PostgreSQL: take the writer lock and read the touched rows in one call",
        {
            "sqlite": [],
            "postgresql": [
                # VOLATILE: in READ COMMITTED the query takes a fresh snapshot after the lock
                # is granted, so it sees every write committed by the previous lock holder.
                """CREATE OR REPLACE FUNCTION agentfield_lock_and_read(
                    lock_id BIGINT, scopes TEXT[], scope_ids TEXT[], keys TEXT[])
                RETURNS SETOF memory LANGUAGE plpgsql VOLATILE AS $$
                BEGIN
                    PERFORM pg_advisory_lock(lock_id);
                    RETURN QUERY SELECT * FROM memory WHERE (scope, scope_id, key)
                        IN (SELECT * FROM unnest(scopes, scope_ids, keys));
                END
                $$""",
            ],
        },
    ),
    (
        3,
        "PostgreSQL: read a group's vector rows (and take the writer lock) in one call",
        {
            "sqlite": [],
            "postgresql": [
                # The rows of the touched keys ('k'), and up to two keys (with their
                # dimension) of each scope written into ('s'). With a lock_id, the writer
                # lock is taken first (session-level), as agentfield_lock_and_read does.
                """CREATE OR REPLACE FUNCTION agentfield_lock_and_read_vectors(
                    lock_id BIGINT, k_scopes TEXT[], k_scope_ids TEXT[], k_keys TEXT[],
                    s_scopes TEXT[], s_scope_ids TEXT[])
                RETURNS TABLE (kind TEXT, scope TEXT, scope_id TEXT, key TEXT, dim INTEGER,
                               metadata JSONB, created_us BIGINT)
                LANGUAGE plpgsql VOLATILE AS $$
                #variable_conflict use_column
                BEGIN
                    IF lock_id IS NOT NULL THEN
                        PERFORM pg_advisory_lock(lock_id);
                    END IF;
                    RETURN QUERY
                    SELECT 'k'::text, v.scope, v.scope_id, v.key, v.dim, v.metadata, v.created_us
                    FROM vectors AS v WHERE (v.scope, v.scope_id, v.key)
                        IN (SELECT * FROM unnest(k_scopes, k_scope_ids, k_keys))
                    UNION ALL
                    SELECT 's'::text, s.scope, s.scope_id, w.key, w.dim, NULL::jsonb, NULL::bigint
                    FROM unnest(s_scopes, s_scope_ids) AS s(scope, scope_id)
                    CROSS JOIN LATERAL (SELECT v.key, v.dim FROM vectors AS v
                        WHERE v.scope = s.scope AND v.scope_id = s.scope_id LIMIT 2) AS w;
                END
                $$""",
            ],
        },
    ),
]

SCHEMA_VERSION = MIGRATIONS[-1][0]

# Serialises concurrent migrations from several instances starting at once.
_PG_MIGRATION_LOCK = 0x61667367  # "afsg"


async def migrate(database: Database, dialect: str) -> int:
    """Bring the schema up to :data:`SCHEMA_VERSION`; returns the version found before."""
    async with database.connection() as conn, conn.transaction():
        if dialect == "postgresql":
            await conn.execute(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})")
        await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = await conn.fetch_one("SELECT MAX(version) AS v FROM schema_version")
        current = int(row["v"] or 0) if row else 0
        if current > SCHEMA_VERSION:
            raise RuntimeError(
                f"database schema version {current} is newer than this agentfield-asgi "
                f"({SCHEMA_VERSION}); upgrade the package"
            )
        for version, description, statements in MIGRATIONS:
            if version <= current:
                continue
            if statements[dialect]:  # a migration for the other backend only is no news here
                log.info("applying schema migration %d: %s", version, description)
            for statement in statements[dialect]:
                await conn.execute(statement)
            await conn.execute(f"INSERT INTO schema_version (version) VALUES ({version})")
        return current
