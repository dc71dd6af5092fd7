"""``agentfield-asgi bench``: real servers on loopback, side-by-side baselines, ratios.

Every figure that a target compares is measured in the same run as its baseline,
so the ratios survive a noisy machine. See docs/performance.md for the method.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from ..context import ExecutionContext
from ..testing import PostgresUnavailable, ServerProcess, ThrowawayPostgres
from .client import BenchClient
from .delivery import delivery_latency
from .floors import RedisServer, postgres_floor, redis_bench, sqlite_floor
from .measure import closed_loop, wrk_available, wrk_post
from .preload import preload


@dataclass
class Plan:
    quick: bool
    full: bool
    total: int  # requests per latency point
    wrk_seconds: float
    subscriber_counts: list[int]
    delivery_events: int
    growth_sizes: list[int]
    concurrencies: dict[str, list[int]] = field(default_factory=dict)

    @classmethod
    def make(cls, quick: bool, full: bool) -> Plan:
        if quick:
            return cls(True, False, 200, 1.5, [1, 100], 10, [1_000, 100_000],
                       {"get": [1, 16], "hget": [1], "set": [1, 16], "delete": [1], "list": [1]})
        growth = [1_000, 100_000, 1_000_000] if full else [1_000, 100_000]
        return cls(False, full, 2000, 5.0, [1, 100, 1000], 30, growth,
                   {"get": [1, 16, 64], "hget": [1, 16], "set": [1, 16, 64], "delete": [1, 16],
                    "list": [1, 16]})


def progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


HIER_CONTEXT = ExecutionContext(workflow_id="wf-bench", session_id="bench-user", actor_id="bench-actor")
_SERVER_ENV = {"AGENTFIELD_MAX_SUBSCRIBERS_PER_CLIENT": "5000", "AGENTFIELD_SUBSCRIBER_QUEUE_SIZE": "1000"}


@contextlib.contextmanager
def served(args: list[str] | None = None, app: str | None = None) -> Any:
    server = ServerProcess(args or [], app=app, env=_SERVER_ENV)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def memory_ops(server: ServerProcess, plan: Plan, *, ours: bool) -> dict[str, Any]:
    """Latency of each memory operation at each concurrency through the SDK client."""
    out: dict[str, Any] = {}
    async with BenchClient(server.url) as client:
        if ours:
            for i in range(1000):  # a scope with 1,000 keys for list_keys
                await client.set(f"item-{i}", i, scope="session", scope_id="list-1k")
        ops: dict[str, Callable[[int], Any]] = {
            "get": lambda i: client.get("bench-0", scope="global"),
            "hget": lambda i: client.get("bench-0", context=HIER_CONTEXT),
            "set": lambda i: client.set(f"set-{i}", {"n": i}, scope="global"),
            "list": lambda i: client.list_keys("session", "list-1k"),
        }
        for name, op in ops.items():
            for c in plan.concurrencies[name]:
                progress(f"  {name} c={c}")
                out[f"{name}_c{c}"] = (await closed_loop(op, concurrency=c, total=plan.total)).as_dict()
        for c in plan.concurrencies["delete"]:
            progress(f"  delete c={c}")
            if ours:
                for i in range(plan.total):
                    await client.set(f"del-{c}-{i}", i, scope="global")
            stats = await closed_loop(
                lambda i, c=c: client.delete(f"del-{c}-{i}", scope="global"), concurrency=c, total=plan.total,
                warmup=0,
            )
            out[f"delete_c{c}"] = stats.as_dict()
    return out


def throughput(server: ServerProcess, plan: Plan) -> dict[str, Any]:
    if not wrk_available():
        return {"error": "wrk not installed"}
    progress("  wrk get/set c=16")
    return {
        "get_c16": wrk_post(server.url, "/api/v1/memory/get", '{"key":"bench-0","scope":"global"}',
                            connections=16, seconds=plan.wrk_seconds),
        "set_c16": wrk_post(server.url, "/api/v1/memory/set",
                            '{"key":"wrk-{N}","data":{"n":{N}},"scope":"global"}',
                            connections=16, seconds=plan.wrk_seconds),
    }


async def delivery(server: ServerProcess, plan: Plan) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with BenchClient(server.url) as client:
        for n in plan.subscriber_counts:
            progress(f"  event delivery, {n} subscribers")
            try:
                out[f"subs_{n}"] = await delivery_latency(
                    server.url, lambda key: client.set(key, {"t": time.time()}, scope="global"),
                    subscribers=n, events=plan.delivery_events,
                    server_pid=server.proc.pid if server.proc else None,
                )
            except (OSError, RuntimeError) as exc:  # reported in the table, never hidden
                progress(f"  event delivery failed: {exc}")
                out[f"subs_{n}"] = {"error": str(exc)[:300]}
                break
    return out


async def growth(database_url_for: Callable[[int], str], plan: Plan, serve_args: Callable[[str], list[str]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for size in plan.growth_sizes:
        url = database_url_for(size)
        progress(f"  growth: preloading {size:,} keys")
        await preload(url, size)
        with served(serve_args(url)) as server:
            async with BenchClient(server.url) as client:
                get = await closed_loop(lambda i: client.get(f"bench-{(i * 7919) % size}", scope="global"),
                                        concurrency=1, total=plan.total)
                set_ = await closed_loop(lambda i: client.set(f"grow-{i}", i, scope="global"),
                                         concurrency=1, total=plan.total)
        out[str(size)] = {"get": get.as_dict(), "set": set_.as_dict()}
    return out


@contextlib.asynccontextmanager
async def postgres(url: str | None) -> AsyncIterator[tuple[Callable[[], str], str] | None]:
    """(make a fresh database URL, description), or None when PostgreSQL is unavailable."""
    if url:
        yield (lambda: url), "given"
        return
    try:
        cluster = ThrowawayPostgres(durable=True).start()
    except PostgresUnavailable as exc:
        progress(f"PostgreSQL not benchmarked: {exc}")
        yield None
        return
    try:
        yield cluster.create_database, "throwaway (fsync on)"
    finally:
        cluster.destroy()


async def run(plan: Plan, postgres_url: str | None) -> dict[str, Any]:
    results: dict[str, Any] = {"plan": {"quick": plan.quick, "full": plan.full, "total": plan.total},
                               "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}}
    tmp = tempfile.mkdtemp(prefix="agentfield-bench-")

    progress("baselines: bare Starlette endpoint and plain ASGI callable")
    for name, app in (("starlette", "agentfield_asgi.bench.baselines:starlette_app"),
                      ("asgi", "agentfield_asgi.bench.baselines:asgi_app")):
        with served(app=app) as server:
            results[f"baseline_{name}"] = {"ops": await memory_ops(server, plan, ours=False),
                                           "throughput": throughput(server, plan)}

    progress("embedded (SQLite) backend")
    sqlite_url = f"sqlite:///{tmp}/bench.db"
    await preload(sqlite_url, 1000)
    with served(["--database-url", sqlite_url]) as server:
        results["sqlite"] = {"ops": await memory_ops(server, plan, ours=True),
                             "throughput": throughput(server, plan),
                             "delivery": await delivery(server, plan)}
    progress("  storage floor (same SQL through sqlite3, in process)")
    results["sqlite"]["floor"] = {k: v.as_dict() for k, v in (await sqlite_floor(f"{tmp}/bench.db", total=plan.total)).items()}
    results["sqlite"]["growth"] = await growth(lambda n: f"sqlite:///{tmp}/growth-{n}.db", plan,
                                               lambda url: ["--database-url", url])

    async with postgres(postgres_url) as pg:
        if pg is not None:
            new_db, description = pg
            progress(f"PostgreSQL backend ({description})")
            pg_url = new_db()
            await preload(pg_url, 1000)
            with served(["--database-url", pg_url]) as server:
                results["postgres"] = {"ops": await memory_ops(server, plan, ours=True),
                                       "throughput": throughput(server, plan),
                                       "description": description}
            progress("  storage floor (same SQL through asyncpg, in process)")
            results["postgres"]["floor"] = {k: v.as_dict() for k, v in (await postgres_floor(pg_url, total=plan.total)).items()}
            if not plan.quick:
                results["postgres"]["growth"] = await growth(lambda n: new_db(), plan,
                                                             lambda url: ["--database-url", url])

    if RedisServer.available():
        progress("Redis (AOF appendfsync always) through redis-py asyncio")
        redis = RedisServer().start()
        try:
            results["redis"] = await redis_bench(redis.port, concurrencies=[1, 16, 64], total=plan.total)
        finally:
            redis.stop()
    else:
        results["redis"] = {"error": "redis-server or redis-py not installed"}

    results["vectors"] = await vector_results(plan)
    return results


async def vector_results(plan: Plan) -> dict[str, Any]:
    """The vector benchmark (bench/vectors.py): 100,000 x 384 on every mode this machine
    runs; ``--quick`` measures the embedded mode on 10,000 vectors only."""
    from .vectors import run_vector_bench

    progress("vectors")
    if plan.quick:
        options: dict[str, Any] = {"modes": ("sqlite",), "vectors": 10_000, "queries": 100}
    else:
        options = {"vectors": 100_000, "queries": 300}
    return await asyncio.to_thread(run_vector_bench, report=progress, **options)
