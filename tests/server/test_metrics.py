"""``GET /metrics``: Prometheus exposition, parsed (never grepped), whose values follow the
traffic; with two workers every scrape reports both workers' counts; guarded by the API
keys unless ``--metrics-public``."""

from __future__ import annotations

import asyncio
import glob
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from agentfield_asgi.server.app import create_memory_app
from agentfield_asgi.testing import ServerProcess, ThrowawayPostgres, agent_server
from agentfield_asgi.testing.waits import wait_until

ROOT = Path(__file__).resolve().parents[2]
KEY = {"X-API-Key": "k-ops"}
SET = "/api/v1/memory/set"


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition: (name, labels) -> value."""
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, frozenset(labels.items())), 0.0)


async def scrape(url: str, headers: dict[str, str] | None = KEY) -> str:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:  # a new connection
        response = await client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


async def one_request(url: str, method: str, path: str, **kwargs: object) -> int:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:  # a new connection
        response = await client.request(method, path, headers=KEY, **kwargs)  # type: ignore[arg-type]
    return response.status_code


async def test_two_workers_report_every_request(
    pg_cluster: ThrowawayPostgres, tmp_path: Path
) -> None:
    url = pg_cluster.create_database()
    shared = tmp_path / "prom"
    shared.mkdir()
    (shared / "counter_1.db").write_bytes(b"stale")  # an earlier run's file is removed
    server = ServerProcess(
        ["--database-url", url, "--workers", "2", "--api-key", "k-ops"],
        env={"PROMETHEUS_MULTIPROC_DIR": str(shared)},
    ).start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            refused = await client.get("/metrics")
            assert refused.status_code == 401 and refused.json()["code"] == "unauthorized"
        before = await scrape(server.url)
        assert value(before, "agentfield_http_requests_total", route=SET, method="POST",
                     status="200") == 0  # fmt: skip

        # 60 sets and 15 misses, each on a new connection, many at once: both workers answer.
        sets = [one_request(server.url, "POST", SET, json={"key": f"k{i}", "data": i})
                for i in range(60)]  # fmt: skip
        misses = [
            one_request(server.url, "POST", "/api/v1/memory/get", json={"key": f"none{i}"})
            for i in range(15)
        ]
        statuses = await asyncio.gather(*sets, *misses)
        assert statuses == [200] * 60 + [404] * 15
        # Values of two pids, each worker's own file (and the stale one gone).
        pids = {Path(p).stem.split("_")[-1] for p in glob.glob(str(shared / "counter_*.db"))}
        assert len(pids) == 2 and "1" not in pids, pids

        # Whichever worker answers, the scrape sums both.
        for _ in range(6):
            text = await scrape(server.url)
            assert value(text, "agentfield_http_requests_total", route=SET, method="POST",
                         status="200") == 60  # fmt: skip
            assert value(text, "agentfield_http_requests_total", route="/api/v1/memory/get",
                         method="POST", status="404") == 15  # fmt: skip
            assert value(text, "agentfield_http_request_duration_seconds_count", route=SET,
                         method="POST") == 60  # fmt: skip
            assert value(text, "agentfield_write_group_size_sum") == 60
            assert 1 <= value(text, "agentfield_write_group_size_count") <= 60
            assert value(text, "agentfield_http_requests_total", route="/metrics",
                         method="GET", status="401") == 1  # fmt: skip

        # Every event reaches both workers' feeds (each delivers to its own subscribers).
        async def delivered_twice() -> bool:
            text = await scrape(server.url)
            return value(text, "agentfield_events_delivered_total") == 120

        await wait_until(delivered_twice, "each worker's feed did not deliver every event")
        text = await scrape(server.url)
        assert value(text, "agentfield_event_feed_lag_seconds_count") >= 2
        pool = value(text, "agentfield_db_pool_connections", state="idle") + value(
            text, "agentfield_db_pool_connections", state="busy"
        )
        assert pool >= 4  # two workers, each at least its pool's minimum of 2

        # A subscriber shows up in the gauge while its stream is open, and leaves it after.
        async with (
            httpx.AsyncClient(base_url=server.url, timeout=30) as client,
            client.stream("GET", "/api/v1/memory/events/sse", headers=KEY) as stream,
        ):
            assert stream.status_code == 200

            async def subscribed(n: float) -> bool:
                text = await scrape(server.url)
                return value(text, "agentfield_event_subscribers") == n

            await wait_until(lambda: subscribed(1), "subscriber gauge did not reach 1")
        await wait_until(lambda: subscribed(0), "subscriber gauge did not return to 0")
    finally:
        server.stop()
    assert not glob.glob(str(shared / "gauge_livesum_*.db")), "dead workers' gauges were kept"


async def write_group_timings(args: list[str], sets: int = 20) -> tuple[str, str]:
    """Scrapes before and after ``sets`` concurrent sets on a real server started with ``args``."""
    with ServerProcess([*args, "--api-key", "k-ops"]) as server:
        before = await scrape(server.url)
        writes = [one_request(server.url, "POST", SET, json={"key": f"g{i}", "data": i})
                  for i in range(sets)]  # fmt: skip
        assert await asyncio.gather(*writes) == [200] * sets
        return before, await scrape(server.url)


def assert_commit_timed(before: str, after: str, sets: int = 20) -> float:
    """Every group is commit-timed, and its commit lies within its submit-to-durable time.
    Returns the groups observed during the writes."""
    groups = value(after, "agentfield_write_group_size_count") - value(
        before, "agentfield_write_group_size_count"
    )
    assert 1 <= groups <= sets
    commits = value(after, "agentfield_write_group_commit_seconds_count")
    assert commits - value(before, "agentfield_write_group_commit_seconds_count") == groups
    assert commits == value(after, "agentfield_write_group_size_count")
    commit_sum = value(after, "agentfield_write_group_commit_seconds_sum")
    assert 0 < commit_sum <= value(after, "agentfield_write_group_seconds_sum")
    return groups


async def test_sqlite_writer_thread_times_commit_and_fsync_apart(tmp_path: Path) -> None:
    """The writer thread commits with synchronous=NORMAL, then its syncer fsyncs the WAL:
    both are timed, for every group, and together fit in the group's durable time."""
    db = f"sqlite:///{tmp_path / 't.db'}"
    before, after = await write_group_timings(["--database-url", db, "--sqlite-writer", "thread"])
    groups = assert_commit_timed(before, after)
    fsyncs = value(after, "agentfield_write_group_fsync_seconds_count")
    assert fsyncs - value(before, "agentfield_write_group_fsync_seconds_count") == groups
    assert fsyncs == value(after, "agentfield_write_group_size_count")
    fsync_sum = value(after, "agentfield_write_group_fsync_seconds_sum")
    commit_sum = value(after, "agentfield_write_group_commit_seconds_sum")
    assert 0 < fsync_sum and commit_sum + fsync_sum <= value(
        after, "agentfield_write_group_seconds_sum"
    )


async def test_sqlite_writer_process_reports_commit_time_with_fsync_inside(
    tmp_path: Path,
) -> None:
    """The writer process commits with synchronous=FULL: its fsync is inside COMMIT, so it
    reports the commit's time (fsync included) and no separate fsync time."""
    db = f"sqlite:///{tmp_path / 'p.db'}"
    before, after = await write_group_timings(["--database-url", db, "--sqlite-writer", "process"])
    assert_commit_timed(before, after)
    assert value(after, "agentfield_write_group_fsync_seconds_count") == 0


async def test_postgres_reports_commit_time_not_fsync(pg_cluster: ThrowawayPostgres) -> None:
    """PostgreSQL flushes its WAL inside COMMIT, on the server: the client times the
    transaction and reports no fsync time rather than invent one."""
    url = pg_cluster.create_database()
    before, after = await write_group_timings(["--database-url", url])
    assert_commit_timed(before, after)
    assert value(after, "agentfield_write_group_fsync_seconds_count") == 0


async def test_metrics_public_opens_only_metrics(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'm.db'}"
    with ServerProcess(["--database-url", db, "--api-key", "k-ops", "--metrics-public"]) as server:
        text = await scrape(server.url, headers=None)
        assert value(text, "agentfield_http_requests_total", route="/metrics", method="GET",
                     status="200") == 0  # fmt: skip
        assert await one_request(server.url, "GET", "/metrics") == 200
        async with httpx.AsyncClient(base_url=server.url) as client:
            memory = await client.post(SET, json={"key": "k", "data": 1})
        assert memory.status_code == 401


async def test_in_process_values_follow_traffic(tmp_path: Path) -> None:
    service = create_memory_app(f"sqlite:///{tmp_path / 'm.db'}")
    transport = httpx.ASGITransport(app=service.app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://m") as client:
            first = (await client.get("/metrics")).text
            assert value(first, "agentfield_write_group_size_count") == 0
            for i in range(5):
                assert (await client.post(SET, json={"key": f"k{i}", "data": i})).status_code == 200
            await client.get("/api/v1/no/such/route")
            text = (await client.get("/metrics")).text
            assert value(text, "agentfield_http_requests_total", route=SET, method="POST",
                         status="200") == 5  # fmt: skip
            # Unknown paths share one label value (bounded cardinality).
            assert value(text, "agentfield_http_requests_total", route="other", method="GET",
                         status="404") == 1  # fmt: skip
            # The sets, plus the service's own writes (event-log compaction at start).
            assert value(text, "agentfield_write_group_size_sum") >= 5
            assert value(text, "agentfield_events_delivered_total") == 5
            assert value(text, "agentfield_http_requests_total", route="/metrics", method="GET",
                         status="200") == 1  # fmt: skip
    finally:
        await service.stop()


async def test_executions_by_status(tmp_path: Path) -> None:
    """A two-node workflow through the control plane: both executions counted as they start
    and as they succeed; one that fails (no session header for its session memory) too."""
    db = f"sqlite:///{tmp_path / 'cp.db'}"
    with ServerProcess(["--database-url", db]) as cp:
        nodes = [
            agent_server(f"tests.agent.{m}:app", cp.url, cwd=str(ROOT)).start()
            for m in ("seed_support", "seed_specialist")
        ]
        try:
            async with httpx.AsyncClient(base_url=cp.url, timeout=60) as client:
                ticket = {"input": {"ticket_id": "T1", "priority": "high", "category": "billing"}}
                path = "/api/v1/execute/support-agent.handle_ticket"
                ok = await client.post(path, json=ticket, headers={"X-Session-ID": "s1"})
                assert ok.status_code == 200, ok.text
                failed = await client.post(path, json=ticket)
                assert failed.status_code == 502, failed.text
                text = (await client.get("/metrics")).text
            assert value(text, "agentfield_executions_total", status="running") == 3
            assert value(text, "agentfield_executions_total", status="succeeded") == 2
            assert value(text, "agentfield_executions_total", status="failed") == 1
        finally:
            for node in nodes:
                node.stop()


async def test_observability_off_leaves_metrics_and_spans_out(tmp_path: Path) -> None:
    from agentfield_asgi import tracing

    service = create_memory_app(f"sqlite:///{tmp_path / 'm.db'}", observability=False)
    assert service.metrics is None
    assert not isinstance(service.app, tracing.TracingMiddleware)
    transport = httpx.ASGITransport(app=service.app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://m") as client:
            off = await client.get("/metrics")
            assert off.status_code == 501 and "metrics are off" in off.json()["error"]
    finally:
        await service.stop()


async def test_bench_compares_observability_on_and_off(tmp_path: Path) -> None:
    """The bench's side-by-side section runs and reports both servers (its numbers are
    measurements, not asserted)."""
    from agentfield_asgi.bench.observability import observability_cost

    result = await observability_cost(str(tmp_path), total=60)
    assert result["metrics"] and result["tracing"]
    for op in ("get_c8", "set_c8"):
        row = result[op]
        assert row["off"]["n"] == row["on"]["n"] == 60
        assert row["off"]["errors"] == row["on"]["errors"] == 0
        assert row["on_over_off"] > 0
