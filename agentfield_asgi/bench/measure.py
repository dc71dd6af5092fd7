"""Latency and throughput measurement: a closed-loop driver for the Python client and
``wrk`` for throughput (so the Python client is not the bottleneck)."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass


@dataclass
class Stats:
    n: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    ops_per_s: float
    errors: int = 0

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def summarize(latencies_ns: list[int], elapsed_s: float, errors: int = 0) -> Stats:
    values = sorted(v / 1e6 for v in latencies_ns)
    return Stats(
        n=len(values),
        p50_ms=round(percentile(values, 0.50), 4),
        p99_ms=round(percentile(values, 0.99), 4),
        max_ms=round(values[-1], 4) if values else float("nan"),
        ops_per_s=round(len(values) / elapsed_s, 1) if elapsed_s > 0 else 0.0,
        errors=errors,
    )


async def closed_loop(
    op: Callable[[int], Awaitable[object]], *, concurrency: int, total: int, warmup: int = 50
) -> Stats:
    """Run ``op(i)`` ``total`` times from ``concurrency`` tasks; per-call latency."""
    latencies, elapsed, errors = await closed_loop_raw(
        op, concurrency=concurrency, total=total, warmup=warmup
    )
    return summarize(latencies, elapsed, errors)


async def closed_loop_raw(
    op: Callable[[int], Awaitable[object]],
    *,
    concurrency: int,
    total: int,
    warmup: int = 50,
    first: int = 0,
) -> tuple[list[int], float, int]:
    """:func:`closed_loop`'s raw latencies (ns), elapsed seconds and error count; ``op``
    gets ``first .. first + total - 1``."""
    measured = await closed_loop_paired(
        {"op": op}, concurrency=concurrency, total=total, warmup=min(warmup, total), first=first
    )
    return measured["op"]


async def closed_loop_paired(
    ops: dict[str, Callable[[int], Awaitable[object]]],
    *,
    concurrency: int,
    total: int,
    warmup: int = 20,
    first: int = 0,
) -> dict[str, tuple[list[int], float, int]]:
    """Like :func:`closed_loop_raw` for several ops compared with each other: every task
    runs them in turn, call by call, so the machine's drift hits each of them alike.
    Each op runs ``total`` times; its elapsed time is its share of the latency sum."""
    for i in range(warmup):
        for op in ops.values():
            await op(-1 - i)
    counter = itertools.count()
    latencies: dict[str, list[int]] = {name: [] for name in ops}
    errors = dict.fromkeys(ops, 0)

    async def worker() -> None:
        while (i := next(counter)) < total:
            for name, op in ops.items():
                t0 = time.perf_counter_ns()
                try:
                    await op(first + i)
                except Exception:
                    errors[name] += 1
                    continue
                latencies[name].append(time.perf_counter_ns() - t0)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    grand = sum(sum(v) for v in latencies.values()) or 1
    return {
        name: (lat, elapsed * sum(lat) / grand, errors[name]) for name, lat in latencies.items()
    }


_WRK_SCRIPT = """
local counter = 0
local headers = {["Content-Type"] = "application/json"}
for k, v in pairs(EXTRA_HEADERS) do headers[k] = v end
request = function()
  counter = counter + 1
  local body = string.gsub(BODY, "{N}", tostring(counter))
  return wrk.format("POST", PATH, headers, body)
end
"""


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def wrk_post(
    url: str,
    path: str,
    body: str,
    *,
    connections: int,
    seconds: float,
    headers: dict[str, str] | None = None,
) -> dict[str, float]:
    """Throughput of POST ``path`` with ``body`` (``{N}`` becomes a per-request counter)."""
    lua_headers = (
        "{" + ", ".join(f"[ [[{k}]] ] = [[{v}]]" for k, v in (headers or {}).items()) + "}"
    )
    # Lua long strings: the JSON body needs no escaping.
    script = f"PATH = [[{path}]]\nBODY = [[{body}]]\nEXTRA_HEADERS = {lua_headers}\n" + _WRK_SCRIPT
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    try:
        out = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{connections}",
                f"-d{max(1, round(seconds))}s",
                "--latency",
                "-s",
                f.name,
                url,
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 30,
        ).stdout
    finally:
        os.unlink(f.name)
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    rps = float(found.group(1)) if found else 0.0
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    return {
        "requests_per_s": rps,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "p50_ms": _to_ms(p50),
        "p99_ms": _to_ms(p99),
    }


def _to_ms(match: re.Match[str] | None) -> float:
    if match is None:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return {"us": value / 1000, "ms": value, "s": value * 1000}[unit]
