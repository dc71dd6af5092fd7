"""The printed table (with ratios against the baselines), the target check, JSON and chart."""

from __future__ import annotations

import math
from typing import Any

from ..codec import dumps


def _get(results: dict[str, Any], *path: str) -> Any:
    node: Any = results
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b or math.isnan(a) or math.isnan(b):
        return None
    return round(a / b, 3)


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of issue 6: measured value, limit, met or not."""
    rows: list[dict[str, Any]] = []

    def check(name: str, value: float | None, limit: float, *, at_least: bool = False) -> None:
        met = None if value is None else (value >= limit if at_least else value <= limit)
        rows.append(
            {
                "target": name,
                "value": value,
                "limit": limit,
                "op": ">=" if at_least else "<=",
                "met": met,
            }
        )

    s, base = "sqlite", "baseline_starlette"
    get1 = _get(results, s, "ops", "get_c1", "p50_ms")
    check(
        "sqlite get c1 p50 / bare Starlette p50",
        _ratio(get1, _get(results, base, "ops", "get_c1", "p50_ms")),
        1.15,
    )
    check("sqlite get c1 p50 (ms)", get1, 1.0)
    check("sqlite get c1 p99 (ms)", _get(results, s, "ops", "get_c1", "p99_ms"), 5.0)
    check("sqlite durable set c1 p50 (ms)", _get(results, s, "ops", "set_c1", "p50_ms"), 2.0)
    check("sqlite durable set c1 p99 (ms)", _get(results, s, "ops", "set_c1", "p99_ms"), 10.0)
    check(
        "hierarchical get p50 / single-scope get p50",
        _ratio(_get(results, s, "ops", "hget_c1", "p50_ms"), get1),
        1.1,
    )
    bare_get = _get(results, base, "throughput", "get_c16", "requests_per_s")
    bare_set = _get(results, base, "throughput", "set_c16", "requests_per_s")
    check(
        "sqlite get throughput c16 / bare Starlette (wrk)",
        _ratio(_get(results, s, "throughput", "get_c16", "requests_per_s"), bare_get),
        0.8,
        at_least=True,
    )
    check(
        "sqlite durable set throughput c16 / bare Starlette (wrk)",
        _ratio(_get(results, s, "throughput", "set_c16", "requests_per_s"), bare_set),
        0.5,
        at_least=True,
    )
    check(
        "delivery p50 at 100 subscribers (ms)",
        _get(results, s, "delivery", "subs_100", "p50_ms"),
        2.0,
    )
    check(
        "delivery p99 at 100 subscribers (ms)",
        _get(results, s, "delivery", "subs_100", "p99_ms"),
        5.0,
    )
    check(
        "delivery p99 at 1000 subscribers (ms)",
        _get(results, s, "delivery", "subs_1000", "p99_ms"),
        50.0,
    )
    check(
        "server memory per subscriber at 1000 (KiB)",
        _get(results, s, "delivery", "subs_1000", "server_rss_kib_per_subscriber"),
        64.0,
    )
    check(
        "MCP memory_get tool call (Streamable HTTP) c1 p50 (ms)",
        _get(results, s, "mcp", "mcp_get_c1", "p50_ms"),
        3.0,
    )
    check(
        "MCP memory_get p50 - REST get p50, side by side (ms)",
        _get(results, s, "mcp", "overhead_p50_ms"),
        3.0,
    )
    growth = _get(results, s, "growth") or {}
    if growth:
        largest = max(growth, key=int)
        check(
            f"get p50 at {int(largest):,} keys / at 1,000 keys",
            _ratio(_get(growth, largest, "get", "p50_ms"), _get(growth, "1000", "get", "p50_ms")),
            1.5,
        )
    if "postgres" in results:
        p = "postgres"
        check("postgres get c1 p50 (ms)", _get(results, p, "ops", "get_c1", "p50_ms"), 2.0)
        check("postgres set c1 p50 (ms)", _get(results, p, "ops", "set_c1", "p50_ms"), 3.0)
        check(
            "postgres durable set throughput c16 / bare Starlette (wrk)",
            _ratio(_get(results, p, "throughput", "set_c16", "requests_per_s"), bare_set),
            0.5,
            at_least=True,
        )
    modes = _get(results, "vectors", "modes") or {}
    full_size = (_get(results, "vectors", "dataset", "vectors") or 0) >= 100_000
    for mode, row in modes.items():
        if not isinstance(row, dict) or "search_p50_ms" not in row:
            continue
        check(
            f"vectors {mode}: inserts/s from 16 clients",
            row["inserts_per_s"],
            2000.0,
            at_least=True,
        )
        if not full_size:
            continue
        if mode == "sqlite":
            check("vectors sqlite: search p50 at 100k x 384 (ms)", row["search_p50_ms"], 15.0)
        if mode == "postgres-pgvector":
            check("vectors pgvector HNSW: search p50 (ms)", row["search_p50_ms"], 10.0)
            check("vectors pgvector HNSW: recall@10", row.get("recall_at_10"), 0.95, at_least=True)
    return rows


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def print_report(results: dict[str, Any]) -> None:
    base_ops = _get(results, "baseline_starlette", "ops") or {}
    asgi_ops = _get(results, "baseline_asgi", "ops") or {}
    print("\nLatency over HTTP (SDK client), ms; ratio = ours p50 / bare Starlette p50")
    header = f"{'backend':<9} {'op':<10} {'p50':>8} {'p99':>8} {'max':>8} {'ops/s':>9} {'starlette':>9} {'asgi':>8} {'ratio':>6}"
    print(header)
    print("-" * len(header))
    for backend in ("sqlite", "postgres"):
        for name, stats in (_get(results, backend, "ops") or {}).items():
            bare = base_ops.get(name.replace("hget", "get"), {})
            asgi = asgi_ops.get(name.replace("hget", "get"), {})
            print(
                f"{backend:<9} {name:<10} {_fmt(stats['p50_ms']):>8} {_fmt(stats['p99_ms']):>8} "
                f"{_fmt(stats['max_ms']):>8} {_fmt(stats['ops_per_s']):>9} {_fmt(bare.get('p50_ms')):>9} "
                f"{_fmt(asgi.get('p50_ms')):>8} {_fmt(_ratio(stats['p50_ms'], bare.get('p50_ms'))):>6}"
            )
    print("\nThroughput at 16 connections (wrk), requests/s")
    for name in ("baseline_asgi", "baseline_starlette", "sqlite", "postgres"):
        t = _get(results, name, "throughput") or {}
        if "get_c16" in t:
            print(
                f"  {name:<20} get {t['get_c16']['requests_per_s']:>9,.0f}   set {t['set_c16']['requests_per_s']:>9,.0f}"
                f"   (non-2xx: {t['get_c16']['non_2xx'] + t['set_c16']['non_2xx']})"
            )
    print("\nStorage floor (same SQL through the driver, in process), ms p50")
    for backend in ("sqlite", "postgres"):
        floor = _get(results, backend, "floor")
        if floor:
            ours_get = _get(results, backend, "ops", "get_c1", "p50_ms")
            ours_set = _get(results, backend, "ops", "set_c1", "p50_ms")
            print(
                f"  {backend:<9} get {floor['get']['p50_ms']:.4f} (ours over HTTP x{_fmt(_ratio(ours_get, floor['get']['p50_ms']))})"
                f"   set {floor['set']['p50_ms']:.4f} (ours over HTTP x{_fmt(_ratio(ours_set, floor['set']['p50_ms']))})"
            )
    print("\nDurable set throughput floor (same SQL in process) vs ours over HTTP (wrk, 16 conns)")
    for backend in ("sqlite", "postgres"):
        floor = _get(results, backend, "floor") or {}
        point = floor.get("set_c16") or floor.get("set")
        ours_rps = _get(results, backend, "throughput", "set_c16", "requests_per_s")
        if point:
            how = "16 connections" if "set_c16" in floor else "one connection (one writer)"
            print(
                f"  {backend:<9} floor {point['ops_per_s']:>9,.0f}/s ({how})   ours {_fmt(ours_rps):>9}/s"
                f"  x{_fmt(_ratio(ours_rps, point['ops_per_s']))}"
            )
    redis = results.get("redis") or {}
    if "get_c1" in redis:
        print("\nRedis (AOF always, redis-py asyncio), ms p50; ratio = ours sqlite / redis")
        for name in ("get_c1", "get_c16", "set_c1", "set_c16"):
            ours = _get(results, "sqlite", "ops", name, "p50_ms")
            print(
                f"  {name:<8} redis {redis[name]['p50_ms']:.3f}  ours {_fmt(ours)}  x{_fmt(_ratio(ours, redis[name]['p50_ms']))}"
            )
    mcp = _get(results, "sqlite", "mcp") or {}
    if "mcp_get_c1" in mcp:
        print("\nMCP over Streamable HTTP (SQLite server), c1, ms")
        for name in ("mcp_get_c1", "rest_get_c1"):
            print(f"  {name:<12} p50 {mcp[name]['p50_ms']:.3f}  p99 {mcp[name]['p99_ms']:.3f}")
        print(f"  memory_get tool call over the REST get: +{mcp['overhead_p50_ms']:.3f} ms p50")
    elif mcp:
        print(f"\nMCP: {mcp.get('error')}")
    delivery = _get(results, "sqlite", "delivery") or {}
    if delivery:
        print("\nEvent delivery after acknowledgement (SSE), ms")
        for row in delivery.values():
            if "error" in row:
                print(f"  error: {row['error']}")
                continue
            print(
                f"  {row['subscribers']:>5} subscribers: p50 {row['p50_ms']:.3f}  p99 {row['p99_ms']:.3f}  "
                f"(from the write request: p50 {row.get('from_write_p50_ms')} p99 {row.get('from_write_p99_ms')})  lost {row['lost']}  server memory/subscriber {row['server_rss_kib_per_subscriber']} KiB"
            )
    growth = _get(results, "sqlite", "growth") or {}
    if growth:
        print("\nGrowth (SQLite), ms p50")
        for size, row in growth.items():
            print(
                f"  {int(size):>9,} keys: get {row['get']['p50_ms']:.3f}  set {row['set']['p50_ms']:.3f}"
            )
    modes = _get(results, "vectors", "modes") or {}
    if modes:
        print(f"\nVectors ({_get(results, 'vectors', 'dataset')})")
        for mode, row in modes.items():
            if "search_p50_ms" in row:
                print(
                    f"  {mode:<18} search p50 {row['search_p50_ms']} ms  p99 {row['search_p99_ms']} ms"
                    f"  recall@10 {row.get('recall_at_10')}  inserts/s {row['inserts_per_s']}"
                )
            else:
                print(f"  {mode:<18} {row}")
    print("\nTargets")
    for row in targets(results):
        mark = {True: "met", False: "NOT MET", None: "n/a"}[row["met"]]
        print(
            f"  {mark:<8} {row['target']:<62} {_fmt(row['value']):>10} {row['op']} {row['limit']}"
        )


def write_json(results: dict[str, Any], path: str) -> None:
    results = {**results, "targets": targets(results)}
    with open(path, "wb") as f:
        f.write(dumps(results))


def write_chart(results: dict[str, Any], path: str) -> bool:
    """Latency vs concurrency and vs store size, as a PNG (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, path_ in (
        ("sqlite get", ("sqlite", "get")),
        ("sqlite set", ("sqlite", "set")),
        ("postgres get", ("postgres", "get")),
        ("postgres set", ("postgres", "set")),
        ("bare Starlette get", ("baseline_starlette", "get")),
    ):
        ops = _get(results, path_[0], "ops") or {}
        points = sorted(
            (int(k.split("_c")[1]), v["p50_ms"])
            for k, v in ops.items()
            if k.startswith(path_[1] + "_c")
        )
        if points:
            left.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
    left.set_xscale("log", base=2)
    left.set_xlabel("concurrent clients")
    left.set_ylabel("p50 latency (ms)")
    left.set_title("Latency vs concurrency")
    left.legend(fontsize=8)
    growth = _get(results, "sqlite", "growth") or {}
    if growth:
        sizes = sorted(int(s) for s in growth)
        for op in ("get", "set"):
            right.plot(
                sizes,
                [growth[str(s)][op]["p50_ms"] for s in sizes],
                marker="o",
                label=f"sqlite {op}",
            )
        right.set_xscale("log")
    right.set_xlabel("stored keys")
    right.set_ylabel("p50 latency (ms)")
    right.set_title("Latency vs store size (concurrency 1)")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
