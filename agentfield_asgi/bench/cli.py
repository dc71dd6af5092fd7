"""Argument parsing for ``agentfield-asgi bench``."""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any


def add_bench_parser(sub: Any) -> None:
    bench = sub.add_parser("bench", help="benchmark the memory service against baselines")
    bench.add_argument("--quick", action="store_true", help="a short run (under 60 s)")
    bench.add_argument("--full", action="store_true", help="include the 1M-key growth point")
    bench.add_argument(
        "--postgres-url", default=None, help="benchmark this PostgreSQL (default: a throwaway one)"
    )
    bench.add_argument(
        "--output", default="bench-results.json", help="where to write the JSON results"
    )
    bench.add_argument(
        "--chart", default=None, help="where to write the PNG chart (default: next to --output)"
    )


def run_bench(args: argparse.Namespace) -> int:
    from .report import print_report, write_chart, write_json
    from .runner import Plan, progress, run

    started = time.monotonic()
    plan = Plan.make(args.quick, args.full)
    results = asyncio.run(run(plan, args.postgres_url))
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    print_report(results)
    write_json(results, args.output)
    chart = args.chart or args.output.rsplit(".", 1)[0] + ".png"
    if write_chart(results, chart):
        progress(f"chart written to {chart}")
    else:
        progress("no chart: matplotlib is not installed (pip install 'agentfield-asgi[bench]')")
    progress(f"results written to {args.output} in {results['elapsed_s']} s")
    return 0
