"""Argument parsing for ``agentfield-asgi bench``."""

from __future__ import annotations

import argparse
from typing import Any


def add_bench_parser(sub: Any) -> None:
    bench = sub.add_parser("bench", help="benchmark the memory service against baselines")
    bench.add_argument("--quick", action="store_true", help="a short run (under 60 s)")
    bench.add_argument("--full", action="store_true", help="include the 1M-key growth point")
    bench.add_argument("--postgres-url", default=None, help="benchmark this PostgreSQL too")
    bench.add_argument(
        "--output", default="bench-results.json", help="where to write the JSON results"
    )


def run_bench(args: argparse.Namespace) -> int:
    raise SystemExit("agentfield-asgi bench: not available yet")
