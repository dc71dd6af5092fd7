"""Floors below the HTTP stack: the same SQL issued directly through the driver in
process, and Redis (AOF ``appendfsync always``) through redis-py asyncio."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import tempfile
import time
from typing import Any

from ..codec import now_us
from ..testing import free_port
from .measure import Stats, closed_loop

_UPSERT = (
    "INSERT INTO memory (scope, scope_id, key, value, metadata, created_us, updated_us, "
    "version, expires_us) "
    "VALUES ({p}) ON CONFLICT (scope, scope_id, key) DO UPDATE SET value = excluded.value, "
    "updated_us = excluded.updated_us, version = memory.version + 1"
)
_EVENT = "INSERT INTO events (ts_us, scope, scope_id, key, action, data) VALUES ({p})"
_GET = "SELECT value, version FROM memory WHERE scope = {a} AND scope_id = {b} AND key = {c}"


async def sqlite_floor(path: str, *, total: int) -> dict[str, Stats]:
    """Point read and durable upsert+event (one transaction, synchronous=FULL) on the
    database file the server uses, in this process, no HTTP."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    upsert = _UPSERT.format(p=", ".join("?" * 9))
    event = _EVENT.format(p=", ".join("?" * 6))
    get_sql = _GET.format(a="?", b="?", c="?")

    async def get(i: int) -> Any:
        return conn.execute(get_sql, ("global", "global", "bench-0")).fetchone()

    async def set_(i: int) -> None:
        ts = now_us()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(upsert, ("global", "global", f"floor-{i}", "1", None, ts, ts, 1, None))
        conn.execute(event, (ts, "global", "global", f"floor-{i}", "set", "1"))
        conn.execute("COMMIT")

    try:
        return {
            "get": await closed_loop(get, concurrency=1, total=total),
            "set": await closed_loop(set_, concurrency=1, total=max(200, total // 5)),
        }
    finally:
        conn.close()


async def postgres_floor(url: str, *, total: int) -> dict[str, Stats]:
    import asyncpg

    conn = await asyncpg.connect(url)
    upsert = _UPSERT.format(p=", ".join(f"${i}" for i in range(1, 10)))
    event = _EVENT.format(p=", ".join(f"${i}" for i in range(1, 7)))
    get_sql = _GET.format(a="$1", b="$2", c="$3")

    async def get(i: int) -> Any:
        return await conn.fetchrow(get_sql, "global", "global", "bench-0")

    async def write(c: Any, i: int) -> None:
        ts = now_us()
        async with c.transaction():
            await c.execute(upsert, "global", "global", f"floor-{i}", "1", None, ts, ts, 1, None)
            await c.execute(event, ts, "global", "global", f"floor-{i}", "set", "1")

    async def set_(i: int) -> None:
        await write(conn, i)

    # Throughput floor: 16 connections, each committing its own transactions (PostgreSQL
    # shares WAL flushes between concurrent commits: its own group commit).
    pool = await asyncpg.create_pool(url, min_size=16, max_size=16)

    async def set_pooled(i: int) -> None:
        async with pool.acquire() as c:
            await write(c, 10_000_000 + i)

    try:
        return {
            "get": await closed_loop(get, concurrency=1, total=total),
            "set": await closed_loop(set_, concurrency=1, total=max(200, total // 5)),
            "set_c16": await closed_loop(set_pooled, concurrency=16, total=max(1000, total)),
        }
    finally:
        await pool.close()
        await conn.close()


class RedisServer:
    """A throwaway ``redis-server`` with AOF ``appendfsync always`` on loopback."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="agentfield-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        try:
            import redis  # noqa: F401
        except ImportError:
            return False
        return shutil.which("redis-server") is not None

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                self.dir,
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.3)
        return self

    def stop(self) -> None:
        if self.proc:
            self.proc.terminate()
            self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


async def redis_bench(port: int, *, concurrencies: list[int], total: int) -> dict[str, Any]:
    import redis.asyncio as redis

    client = redis.Redis(host="127.0.0.1", port=port, max_connections=max(concurrencies) + 4)
    await client.set("bench-0", '{"n":1}')
    results: dict[str, Any] = {}
    try:
        for c in concurrencies:
            results[f"get_c{c}"] = (
                await closed_loop(lambda i: client.get("bench-0"), concurrency=c, total=total)
            ).as_dict()
            results[f"set_c{c}"] = (
                await closed_loop(
                    lambda i: client.set(f"k{i}", '{"n":1}'), concurrency=c, total=total
                )
            ).as_dict()
    finally:
        await client.aclose()
    return results


def drop_file(path: str) -> None:
    for suffix in ("", "-wal", "-shm"):
        try:
            os.unlink(path + suffix)
        except FileNotFoundError:
            pass


__all__ = ["RedisServer", "drop_file", "postgres_floor", "redis_bench", "sqlite_floor"]
