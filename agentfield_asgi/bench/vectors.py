"""Vector benchmark: inserts from concurrent clients, top-k search latency over HTTP, and
recall@k against exact brute force, for each storage mode this machine can run.

Modes: ``sqlite`` (embedded, exact in memory); ``postgres-pgvector`` (a PostgreSQL with the
pgvector extension, HNSW: the ``pgserver`` wheel's binaries when installed);
``postgres-exact`` (Debian's PostgreSQL, which has no pgvector: exact fallback). A mode
that cannot run here is reported as skipped with the reason.

The data are clustered unit vectors (a mixture of Gaussians), which is closer to real
embeddings than uniform noise and gives approximate indexes an honest test. Standalone:
``python -m agentfield_asgi.bench.vectors [--vectors N] [--modes sqlite,...]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from ..testing import PostgresUnavailable, ServerProcess, ThrowawayPostgres, pgvector_bindir

MODES = ("sqlite", "postgres-pgvector", "postgres-exact")
API = "/api/v1/memory/vector"


def make_dataset(n: int, dim: int, queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` stored and ``queries`` query unit vectors drawn around shared cluster centres."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // 100), dim)).astype(np.float32)

    def draw(count: int) -> np.ndarray:
        points = centres[rng.integers(0, len(centres), count)]
        points = points + 0.6 * rng.standard_normal((count, dim)).astype(np.float32)
        return points / np.linalg.norm(points, axis=1, keepdims=True)

    return draw(n), draw(queries)


def exact_top_k(data: np.ndarray, queries: np.ndarray, k: int) -> list[set[int]]:
    """Ground truth for cosine: indices of the ``k`` best rows per query (float64)."""
    scores = queries.astype(np.float64) @ data.astype(np.float64).T
    return [set(np.argsort(-row)[:k].tolist()) for row in scores]


class _Connection:
    """A minimal keep-alive HTTP/1.1 client: the load generator must cost far less CPU
    than the server it measures (this machine has two cores)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(
        self, path: str, body: bytes, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{extra}\r\n"
        )
        self.writer.write(head.encode() + body)
        assert self.reader is not None
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length) if length else b""

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


async def _insert(port: int, data: np.ndarray, clients: int, headers: dict[str, str]) -> float:
    """Insert every row from ``clients`` concurrent connections; returns vectors/s."""
    next_row = iter(range(len(data)))

    async def worker() -> None:
        conn = _Connection("127.0.0.1", port)
        try:
            for row in next_row:
                body = orjson.dumps(
                    {"key": f"v{row}", "embedding": data[row], "metadata": {"shard": row % 16}},
                    option=orjson.OPT_SERIALIZE_NUMPY,
                )
                status, answer = await conn.post(f"{API}/set", body, headers)
                if status != 200:
                    raise RuntimeError(f"insert failed with {status}: {answer[:200]!r}")
        finally:
            conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return len(data) / (time.perf_counter() - started)


async def _search(
    port: int, queries: np.ndarray, k: int, headers: dict[str, str]
) -> tuple[list[float], list[list[str]], float]:
    """Sequential searches on one connection: latencies (ms), result keys, first-search ms."""
    conn = _Connection("127.0.0.1", port)
    latencies: list[float] = []
    results: list[list[str]] = []
    first = 0.0
    try:
        for i, query in enumerate(queries):
            body = orjson.dumps(
                {"query_embedding": query, "top_k": k}, option=orjson.OPT_SERIALIZE_NUMPY
            )
            started = time.perf_counter()
            status, answer = await conn.post(f"{API}/search", body, headers)
            elapsed = (time.perf_counter() - started) * 1000
            if status != 200:
                raise RuntimeError(f"search failed with {status}: {answer[:200]!r}")
            if i == 0:
                first = elapsed  # loads the scope (embedded) or warms caches
                continue
            latencies.append(elapsed)
            results.append([hit["key"] for hit in orjson.loads(answer)])
    finally:
        conn.close()
    return latencies, results, first


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench_server(
    server: ServerProcess,
    data: np.ndarray,
    queries: np.ndarray,
    *,
    k: int = 10,
    clients: int = 16,
    truth: list[set[int]] | None = None,
    settle: Callable[[], float] | None = None,
) -> dict[str, Any]:
    """Measure one running server: insert throughput, search latency, recall@k.

    ``settle`` (PostgreSQL with pgvector) waits until background indexing has caught up
    and returns how long that took; searches are measured before and after it."""
    import httpx

    headers = {"X-Session-ID": "bench-vectors"}
    health = httpx.get(f"{server.url}/api/v1/health", timeout=10).json()
    rss_before = _rss_mb(server.proc.pid) if server.proc else None
    inserts_per_s = asyncio.run(_insert(server.port, data, clients, headers))
    extra: dict[str, Any] = {}
    if settle is not None:
        early, _, _ = asyncio.run(_search(server.port, queries[:51], k, headers))
        extra["search_p50_ms_while_indexing"] = round(_percentile(early, 0.50), 2)
        extra["indexing_caught_up_after_s"] = round(settle(), 1)
    latencies, results, first = asyncio.run(_search(server.port, queries, k, headers))
    truth = truth if truth is not None else exact_top_k(data, queries[1:], k)
    recall = statistics.fmean(
        len({int(key[1:]) for key in got} & want) / k
        for got, want in zip(results, truth, strict=True)
    )
    return {
        "mode": health.get("vectors", "unknown"),
        "vectors": len(data),
        "dimension": int(data.shape[1]),
        "insert_clients": clients,
        "inserts_per_s": round(inserts_per_s, 1),
        "first_search_ms": round(first, 2),
        "search_p50_ms": round(_percentile(latencies, 0.50), 2),
        "search_p99_ms": round(_percentile(latencies, 0.99), 2),
        "searches": len(latencies),
        f"recall_at_{k}": round(recall, 4),
        "server_rss_mb_before": rss_before,
        "server_rss_mb_after": _rss_mb(server.proc.pid) if server.proc else None,
        **extra,
    }


SETTLED_SQL = r"""
SELECT count(*) FROM vectors
WHERE gen = 0 OR gen > (
    SELECT coalesce(max(substring(c.relname from '_g(\d+)$')::int), 0)
    FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
    WHERE i.indisvalid AND c.relname LIKE 'vectors\_hnsw\_%')
"""
"""Rows not yet in a valid HNSW generation (pending, or in a generation being built)."""


def _wait_until_indexed(url: str, timeout: float = 1800.0) -> Callable[[], float]:
    """For pgvector: wait until every vector row is in a valid HNSW generation."""

    async def poll() -> float:
        import asyncpg

        started = time.monotonic()
        conn = await asyncpg.connect(url)
        try:
            while time.monotonic() - started < timeout:
                if not await conn.fetchval(SETTLED_SQL):
                    break
                await asyncio.sleep(0.5)
        finally:
            await conn.close()
        return time.monotonic() - started

    return lambda: asyncio.run(poll())


@contextmanager
def _database(mode: str, workdir: str) -> Iterator[str]:
    if mode == "sqlite":
        yield f"sqlite:///{workdir}/bench-vectors.db"
        return
    if mode == "postgres-pgvector":
        cluster = ThrowawayPostgres(bindir=pgvector_bindir(), durable=True)
    else:
        cluster = ThrowawayPostgres(durable=True)  # fsync on: inserts are acknowledged durable
    cluster.start()
    try:
        yield cluster.create_database()
    finally:
        cluster.destroy()


def run_vector_bench(
    *,
    modes: tuple[str, ...] = MODES,
    vectors: int = 100_000,
    dimension: int = 384,
    queries: int = 300,
    k: int = 10,
    clients: int = 16,
    seed: int = 0,
    report: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the vector benchmark for each mode; returns ``{"dataset": ..., "modes": {...}}``.

    Every mode gets the same data, queries and ground truth. A mode that cannot run on
    this machine appears as ``{"skipped": reason}``; one that fails as ``{"error": ...}``.
    """
    data, query_rows = make_dataset(vectors, dimension, queries + 1, seed)
    truth = exact_top_k(data, query_rows[1:], k)
    results: dict[str, Any] = {
        "dataset": {
            "vectors": vectors,
            "dimension": dimension,
            "queries": queries,
            "k": k,
            "metric": "cosine",
        },
        "modes": {},
    }
    for mode in modes:
        report(f"vectors/{mode}: {vectors} x {dimension}, {clients} insert clients ...")
        with tempfile.TemporaryDirectory(prefix="agentfield-bench-") as workdir:
            try:
                with _database(mode, workdir) as url:
                    server = ServerProcess(
                        ["--database-url", url, "--vector-metric", "cosine"]
                    ).start(timeout=60)
                    try:
                        settle = _wait_until_indexed(url) if mode == "postgres-pgvector" else None
                        outcome = bench_server(
                            server,
                            data,
                            query_rows,
                            k=k,
                            clients=clients,
                            truth=truth,
                            settle=settle,
                        )
                    finally:
                        server.stop()
            except PostgresUnavailable as exc:
                outcome = {"skipped": str(exc)}
            except Exception as exc:  # a failed mode must not hide the others
                outcome = {"error": f"{type(exc).__name__}: {exc}"}
        results["modes"][mode] = outcome
        report(f"vectors/{mode}: {orjson.dumps(outcome).decode()}")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m agentfield_asgi.bench.vectors", description=__doc__
    )
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--dimension", type=int, default=384)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument(
        "--modes", default=",".join(MODES), help=f"comma-separated, from {', '.join(MODES)}"
    )
    parser.add_argument("--output", default=None, help="write the JSON results here")
    args = parser.parse_args(argv)
    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    unknown = set(modes) - set(MODES)
    if unknown:
        parser.error(f"unknown modes: {', '.join(sorted(unknown))}")
    results = run_vector_bench(
        modes=modes,
        vectors=args.vectors,
        dimension=args.dimension,
        queries=args.queries,
        clients=args.clients,
        report=lambda line: print(line, file=sys.stderr, flush=True),
    )
    text = orjson.dumps(results, option=orjson.OPT_INDENT_2).decode()
    if args.output:
        Path(args.output).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
