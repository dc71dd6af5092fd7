"""``GET /api/v1/ready``: 200 only when storage answers, the schema is migrated and the
writer is alive; 503 with the error body and the failed check otherwise; no key needed."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import httpx

from agentfield_asgi.server.app import create_memory_app
from agentfield_asgi.store.schema import SCHEMA_VERSION
from agentfield_asgi.store.sqlite import SQLiteStore
from agentfield_asgi.testing import ServerProcess, ThrowawayPostgres
from agentfield_asgi.testing.waits import wait_until

READY = "/api/v1/ready"


def assert_not_ready(response: httpx.Response, failed_check: str) -> dict[str, str]:
    assert response.status_code == 503, response.text
    body = response.json()
    assert set(body) == {"error", "code", "details"}
    assert body["code"] == "not_ready"
    checks: dict[str, str] = body["details"]["checks"]
    assert checks[failed_check] != "ok"
    assert failed_check in body["error"]
    return checks


async def test_ready_follows_postgres_stopped_and_started(
    own_pg_cluster: ThrowawayPostgres,
) -> None:
    url = own_pg_cluster.create_database()
    with ServerProcess(["--database-url", url, "--api-key", "secret"]) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            ok = await client.get(READY)  # public: no key
            assert ok.status_code == 200, ok.text
            assert ok.json() == {
                "status": "ready",
                "storage": "postgresql",
                "checks": {"storage": "ok", "schema": "ok", "writer": "ok"},
            }
            # Memory routes still need the key: readiness opened nothing else.
            assert (await client.post("/api/v1/memory/get", json={"key": "k"})).status_code == 401

            await asyncio.to_thread(own_pg_cluster.stop)
            down = await client.get(READY)
            checks = assert_not_ready(down, "storage")
            assert checks["schema"] == "unknown" and checks["writer"] == "ok"
            live = await client.get("/api/v1/health")  # liveness is not readiness
            assert live.status_code == 200

            await asyncio.to_thread(own_pg_cluster.start)

            async def ready_again() -> bool:
                return (await client.get(READY)).status_code == 200

            await wait_until(ready_again, "not ready again after PostgreSQL came back")
            headers = {"X-API-Key": "secret"}
            stored = await client.post(
                "/api/v1/memory/set", json={"key": "k", "data": 1}, headers=headers
            )
            assert stored.status_code == 200


async def test_sqlite_ready_then_schema_behind(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    service = create_memory_app(f"sqlite:///{path}")
    transport = httpx.ASGITransport(app=service.app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://m") as client:
            ok = await client.get(READY)
            assert ok.status_code == 200 and ok.json()["storage"] == "sqlite"
            # Another (older) deployment's database: its newest migration is missing.
            with sqlite3.connect(path) as conn:
                conn.execute("DELETE FROM schema_version WHERE version = ?", (SCHEMA_VERSION,))
            checks = assert_not_ready(await client.get(READY), "schema")
            assert checks["schema"] == (
                f"version {SCHEMA_VERSION - 1} applied, {SCHEMA_VERSION} expected"
            )
            assert checks["storage"] == "ok"
    finally:
        await service.stop()


async def test_sqlite_writer_thread_gone_is_not_ready(tmp_path: Path) -> None:
    service = create_memory_app(f"sqlite:///{tmp_path / 'm.db'}", sqlite_writer="thread")
    transport = httpx.ASGITransport(app=service.app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://m") as client:
            assert (await client.get(READY)).status_code == 200
            store = service.store
            assert isinstance(store, SQLiteStore) and store._writer is not None
            await asyncio.to_thread(store._writer.stop)  # type: ignore[union-attr]
            checks = assert_not_ready(await client.get(READY), "writer")
            assert checks["writer"] == "the SQLite writer thread is not running"
    finally:
        await service.stop()


async def test_sqlite_writer_process_killed_is_not_ready_until_replaced(tmp_path: Path) -> None:
    service = create_memory_app(f"sqlite:///{tmp_path / 'm.db'}")
    await service.start()
    try:
        store = service.store
        assert isinstance(store, SQLiteStore)
        assert store.writer_problem() is None
        writer = store._writer
        proc = writer._proc  # type: ignore[union-attr]
        assert proc is not None
        proc.kill()
        await asyncio.to_thread(proc.wait)
        # Dead, and noticed or not yet: either way the writer is not ready at this instant.
        assert store.writer_problem() is not None
        await wait_until(lambda: store.writer_problem() is None, "writer not replaced")
    finally:
        await service.stop()
