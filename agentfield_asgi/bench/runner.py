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
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ..context import ExecutionContext
from ..testing import PostgresUnavailable, ServerProcess, ThrowawayPostgres
from .client import BenchClient
from .delivery import delivery_latency
from .floors import RedisServer, postgres_floor, redis_bench, sqlite_floor
from .mcp import mcp_available, mcp_get_vs_rest
from .measure import (
    closed_loop,
    closed_loop_paired,
    closed_loop_raw,
    summarize,
    wrk_available,
    wrk_post,
)
from .preload import preload


@dataclass
class Plan:
    quick: bool
    full: bool
    total: int  # requests per latency point
    wrk_seconds: float
    wrk_rounds: int
    subscriber_counts: list[int]
    delivery_events: int
    growth_sizes: list[int]
    concurrencies: dict[str, list[int]] = field(default_factory=dict)

    @classmethod
    def make(cls, quick: bool, full: bool) -> Plan:
        if quick:
            return cls(
                True,
                False,
                200,
                1.0,
                1,
                [1, 100],
                10,
                [1_000, 100_000],
                {"get": [1, 16], "hget": [1], "set": [1, 16], "delete": [1], "list": [1]},
            )
        growth = [1_000, 100_000, 1_000_000] if full else [1_000, 100_000]
        return cls(
            False,
            full,
            2000,
            5.0,
            2,
            [1, 100, 1000],
            30,
            growth,
            {
                "get": [1, 16, 64],
                "hget": [1, 16],
                "set": [1, 16, 64],
                "delete": [1, 16],
                "list": [1, 16],
            },
        )


def progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


HIER_CONTEXT = ExecutionContext(
    workflow_id="wf-bench", session_id="bench-user", actor_id="bench-actor"
)
_SERVER_ENV = {
    "AGENTFIELD_MAX_SUBSCRIBERS_PER_CLIENT": "5000",
    "AGENTFIELD_SUBSCRIBER_QUEUE_SIZE": "1000",
}


@contextlib.contextmanager
def served(args: list[str] | None = None, app: str | None = None) -> Any:
    server = ServerProcess(args or [], app=app, env=_SERVER_ENV)
    server.start()
    try:
        yield server
    finally:
        server.stop()


ROUNDS = 4  # each latency point alternates between the servers this many times
PAIRED = ("get", "hget")  # compared by a target: measured call by call in turn


async def memory_ops(
    servers: dict[str, ServerProcess], plan: Plan, ours: set[str]
) -> dict[str, Any]:
    """Latency of each memory operation at each concurrency through the SDK client, for every
    server, measured in alternating rounds (A B C, A B C, ...) so that a noisy machine hits
    all of them alike: the ratios between them are what the targets judge. All ops of one
    concurrency share the rounds, so ops compared with each other alternate too."""
    clients = {name: BenchClient(server.url) for name, server in servers.items()}
    out: dict[str, dict[str, Any]] = {name: {} for name in servers}
    try:
        for name in ours:  # a scope with 1,000 keys for list_keys
            for i in range(1000):
                await clients[name].set(f"item-{i}", i, scope="session", scope_id="list-1k")
        ops: dict[str, Callable[[BenchClient], Callable[[int], Any]]] = {
            "get": lambda c: lambda i: c.get("bench-0", scope="global"),
            "hget": lambda c: lambda i: c.get("bench-0", context=HIER_CONTEXT),
            "set": lambda c: lambda i: c.set(f"set-{i}", {"n": i}, scope="global"),
            "list": lambda c: lambda i: c.list_keys("session", "list-1k"),
            "delete": lambda c: lambda i: c.delete(f"del-{i}", scope="global"),
        }
        per_round = max(20, plan.total // ROUNDS)
        levels = sorted({c for cs in plan.concurrencies.values() for c in cs})
        for conc in levels:
            names = [op for op in ops if conc in plan.concurrencies[op]]
            progress(f"  c={conc}: {', '.join(names)}")
            raw: dict[tuple[str, str], tuple[list[int], float, int]] = {
                (op, n): ([], 0.0, 0) for op in names for n in servers
            }
            # Rounds outermost, servers alternating inside each; the ops a target compares
            # with each other (PAIRED) run call by call in turn.
            for r in range(ROUNDS):
                first = (r + 1) * 1_000_000 + conc * 10_000_000
                paired = [op for op in PAIRED if op in names]
                for op_name in [op for op in names if op not in paired] + paired[:1]:
                    for name, client in clients.items():
                        if op_name == "delete" and name in ours:
                            for i in range(per_round):
                                await client.set(f"del-{first + i}", i, scope="global")
                        if op_name in paired:
                            measured = await closed_loop_paired(
                                {op: ops[op](client) for op in paired},
                                concurrency=conc,
                                total=per_round,
                                first=first,
                            )
                        else:
                            measured = {
                                op_name: await closed_loop_raw(
                                    ops[op_name](client),
                                    concurrency=conc,
                                    total=per_round,
                                    first=first,
                                    warmup=0 if op_name == "delete" else 20,
                                )
                            }
                        for op, (lat, elapsed, errors) in measured.items():
                            acc = raw[(op, name)]
                            raw[(op, name)] = (acc[0] + lat, acc[1] + elapsed, acc[2] + errors)
            for (op_name, name), (lat, elapsed, errors) in raw.items():
                out[name][f"{op_name}_c{conc}"] = summarize(lat, elapsed, errors).as_dict()
    finally:
        for client in clients.values():
            await client.__aexit__()
    return out


def throughput(servers: dict[str, ServerProcess], plan: Plan) -> dict[str, Any]:
    """``wrk`` get and set at 16 connections, servers alternating, rounds averaged."""
    if not wrk_available():
        return {name: {"error": "wrk not installed"} for name in servers}
    progress("  wrk get/set c=16")
    bodies = {
        "get_c16": ("/api/v1/memory/get", '{"key":"bench-0","scope":"global"}'),
        "set_c16": ("/api/v1/memory/set", '{"key":"wrk-{N}","data":{"n":{N}},"scope":"global"}'),
    }
    runs: dict[str, dict[str, list[dict[str, float]]]] = {
        n: {k: [] for k in bodies} for n in servers
    }
    for _ in range(plan.wrk_rounds):
        for name, server in servers.items():
            for key, (path, body) in bodies.items():
                runs[name][key].append(
                    wrk_post(server.url, path, body, connections=16, seconds=plan.wrk_seconds)
                )
    return {
        name: {
            key: {
                "requests_per_s": round(sum(r["requests_per_s"] for r in rs) / len(rs), 1),
                "non_2xx": sum(int(r["non_2xx"]) for r in rs),
                "p50_ms": max(r["p50_ms"] for r in rs),
                "p99_ms": max(r["p99_ms"] for r in rs),
            }
            for key, rs in per_key.items()
        }
        for name, per_key in runs.items()
    }


async def delivery(server: ServerProcess, plan: Plan) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with BenchClient(server.url) as client:
        for n in plan.subscriber_counts:
            progress(f"  event delivery, {n} subscribers")
            try:
                out[f"subs_{n}"] = await delivery_latency(
                    server.url,
                    lambda key: client.set(key, {"t": time.time()}, scope="global"),
                    subscribers=n,
                    events=plan.delivery_events,
                    server_pid=server.proc.pid if server.proc else None,
                )
            except (OSError, RuntimeError) as exc:  # reported in the table, never hidden
                progress(f"  event delivery failed: {exc}")
                out[f"subs_{n}"] = {"error": str(exc)[:300]}
                break
    return out


async def growth(
    database_url_for: Callable[[int], str], plan: Plan, serve_args: Callable[[str], list[str]]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for size in plan.growth_sizes:
        url = database_url_for(size)
        progress(f"  growth: preloading {size:,} keys")
        await preload(url, size)
        with served(serve_args(url)) as server:
            async with BenchClient(server.url) as client:

                def get_one(i: int, size: int = size) -> Awaitable[object]:
                    return client.get(f"bench-{(i * 7919) % size}", scope="global")

                # Every get a different key (7919 is prime): the read cache answers none
                # of them, so the sizes compare the database's own lookups.
                get = await closed_loop(get_one, concurrency=1, total=min(plan.total, size))
                set_ = await closed_loop(
                    lambda i: client.set(f"grow-{i}", i, scope="global"),
                    concurrency=1,
                    total=plan.total,
                )
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
    results: dict[str, Any] = {
        "plan": {"quick": plan.quick, "full": plan.full, "total": plan.total},
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
    }
    tmp = tempfile.mkdtemp(prefix="agentfield-bench-")

    sqlite_url = f"sqlite:///{tmp}/bench.db"
    mcp_flag = ["--mcp"] if mcp_available() else []
    await preload(sqlite_url, 1000)
    async with postgres(postgres_url) as pg:
        stack = contextlib.ExitStack()
        try:
            progress(
                "starting servers: bare Starlette, plain ASGI, SQLite"
                + (", PostgreSQL" if pg else "")
            )
            servers = {
                "baseline_starlette": stack.enter_context(
                    served(app="agentfield_asgi.bench.baselines:starlette_app")
                ),
                "baseline_asgi": stack.enter_context(
                    served(app="agentfield_asgi.bench.baselines:asgi_app")
                ),
                "sqlite": stack.enter_context(served(["--database-url", sqlite_url, *mcp_flag])),
            }
            pg_url = None
            if pg is not None:
                new_db, description = pg
                pg_url = new_db()
                await preload(pg_url, 1000)
                servers["postgres"] = stack.enter_context(served(["--database-url", pg_url]))
            ours = {"sqlite", "postgres"} & set(servers)
            progress("memory operations, servers alternating")
            ops = await memory_ops(servers, plan, ours)
            rates = throughput(servers, plan)
            for name in servers:
                results[name] = {"ops": ops[name], "throughput": rates[name]}
            if pg is not None:
                results["postgres"]["description"] = description
            if mcp_flag:
                progress("MCP memory_get tool call over Streamable HTTP beside REST get, c=1")
                results["sqlite"]["mcp"] = await mcp_get_vs_rest(
                    servers["sqlite"].url, total=plan.total
                )
            else:
                results["sqlite"]["mcp"] = {"error": "mcp not installed (the [mcp] extra)"}
            progress("event delivery (SQLite server)")
            results["sqlite"]["delivery"] = await delivery(servers["sqlite"], plan)
        finally:
            stack.close()
        if pg_url is not None:
            progress("  PostgreSQL storage floor (same SQL through asyncpg, in process)")
            results["postgres"]["floor"] = {
                k: v.as_dict() for k, v in (await postgres_floor(pg_url, total=plan.total)).items()
            }
            if not plan.quick:
                results["postgres"]["growth"] = await growth(
                    lambda n: new_db(), plan, lambda url: ["--database-url", url]
                )

    progress("  storage floor (same SQL through sqlite3, in process)")
    results["sqlite"]["floor"] = {
        k: v.as_dict() for k, v in (await sqlite_floor(f"{tmp}/bench.db", total=plan.total)).items()
    }
    results["sqlite"]["growth"] = await growth(
        lambda n: f"sqlite:///{tmp}/growth-{n}.db", plan, lambda url: ["--database-url", url]
    )

    if RedisServer.available():
        progress("Redis (AOF appendfsync always) through redis-py asyncio")
        redis = RedisServer().start()
        try:
            results["redis"] = await redis_bench(
                redis.port, concurrencies=[1, 16, 64], total=plan.total
            )
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
