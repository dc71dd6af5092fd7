"""Soak test: many clients doing mixed operations and many SSE subscribers against one
``agentfield-asgi serve`` on loopback, for a bounded time.

Passes when no request failed, every subscriber received every event its patterns match
(checked against the event log afterwards), and the server's memory stayed flat. Prints the
server's RSS at the start and end. Run ``python -m agentfield_asgi.testing.soak --help``
(or ``nox -s soak``); it is not part of the default test run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

from ..patterns import matches
from .servers import ServerProcess, rss_kib

API = "/api/v1/memory"
GROUPS = 10
OK_STATUSES = {200, 204}


@dataclass
class Stats:
    ops: int = 0
    errors: list[str] = field(default_factory=list)
    reconnects: int = 0

    def error(self, message: str) -> None:
        if len(self.errors) < 1000:
            self.errors.append(message)


@dataclass
class Subscriber:
    n: int
    patterns: tuple[str, ...]
    received: list[int] = field(default_factory=list)
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    last_id: str | None = None


async def subscribe(url: str, sub: Subscriber, stats: Stats, stop: asyncio.Event) -> None:
    """Read the SSE stream, resuming with Last-Event-ID if it drops, until ``stop``."""
    params = {"patterns": ",".join(sub.patterns)}
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(60, read=None)) as client:
        while not stop.is_set():
            headers = {"Last-Event-ID": sub.last_id} if sub.last_id else {}
            try:
                async with client.stream(
                    "GET", f"{API}/events/sse", params=params, headers=headers
                ) as r:
                    if r.status_code != 200:
                        stats.error(f"subscriber {sub.n}: HTTP {r.status_code}")
                        await asyncio.sleep(1)
                        continue
                    event_id: str | None = None
                    async for line in r.aiter_lines():
                        if line.startswith(":"):
                            sub.connected.set()
                        elif line.startswith("id:"):
                            event_id = line[3:].strip()
                        elif line.startswith("data:") and event_id is not None:
                            sub.received.append(int(json.loads(line[5:])["id"]))
                            sub.last_id = event_id
                        if stop.is_set():
                            return
            except httpx.TransportError as exc:
                if stop.is_set():
                    return
                stats.error(f"subscriber {sub.n}: {exc!r}")
            if not stop.is_set():
                stats.reconnects += 1
                await asyncio.sleep(0.2)


async def client_loop(
    url: str, n: int, prefix: str, rate: float, stats: Stats, stop: asyncio.Event
) -> None:
    """Mixed operations at about ``rate`` per second, on keys spread over the groups."""
    rnd = random.Random(n)
    headers = {"X-Session-ID": f"{prefix}-session-{n % 5}", "X-Agent-Node-ID": f"soak-{n}"}
    async with httpx.AsyncClient(base_url=url, timeout=60, headers=headers) as client:
        while not stop.is_set():
            key = f"{prefix}:g{rnd.randrange(GROUPS)}:k{rnd.randrange(50)}"
            choice = rnd.random()
            try:
                if choice < 0.30:
                    r = await client.post(
                        f"{API}/set", json={"key": key, "data": {"n": n, "v": rnd.random()}}
                    )
                elif choice < 0.55:
                    r = await client.post(f"{API}/get", json={"key": key})
                elif choice < 0.65:
                    r = await client.post(
                        f"{API}/incr", json={"key": key + ":count", "scope": "global"}
                    )
                elif choice < 0.72:
                    r = await client.post(f"{API}/delete", json={"key": key})
                elif choice < 0.80:
                    ops = [{"op": "set", "key": f"{key}:b{j}", "data": j} for j in range(3)]
                    r = await client.post(f"{API}/batch", json={"ops": ops})
                elif choice < 0.90:
                    keys = [f"{prefix}:g{rnd.randrange(GROUPS)}:k{j}" for j in range(5)]
                    r = await client.post(f"{API}/get_many", json={"keys": keys})
                else:
                    r = await client.get(f"{API}/list", params={"scope": "session", "limit": 20})
                stats.ops += 1
                if r.status_code not in OK_STATUSES and not (
                    r.status_code == 404 and choice < 0.55
                ):
                    stats.error(
                        f"client {n}: {r.request.url.path} -> {r.status_code} {r.text[:200]}"
                    )
            except httpx.TransportError as exc:
                stats.error(f"client {n}: {exc!r}")
            await asyncio.sleep(rnd.expovariate(rate))


async def event_log(url: str, prefix: str) -> list[tuple[int, str]]:
    """(id, key) of every event of this run, from the history route, oldest first."""
    out: list[tuple[int, str]] = []
    since = 0
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        while True:
            r = await client.get(
                f"{API}/events/history",
                params={"patterns": f"{prefix}:*", "since_id": since, "limit": 1000},
            )
            r.raise_for_status()
            page = r.json()
            out += [(int(e["id"]), e["key"]) for e in page]
            if len(page) < 1000:
                return out
            since = out[-1][0]


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    workdir = tempfile.mkdtemp(prefix="agentfield-soak-")
    database_url = args.database_url or f"sqlite:///{workdir}/soak.db"
    prefix = f"soak-{uuid.uuid4().hex[:8]}"
    server = ServerProcess(["--database-url", database_url]).start()
    assert server.proc is not None
    pid = server.proc.pid
    stats = Stats()
    stop_clients, stop_subs = asyncio.Event(), asyncio.Event()
    subs = [
        Subscriber(i, (f"{prefix}:*",) if i % 10 == 0 else (f"{prefix}:g{i % GROUPS}:*",))
        for i in range(args.subscribers)
    ]
    rss: list[tuple[float, int]] = []
    try:
        sub_tasks = [asyncio.create_task(subscribe(server.url, s, stats, stop_subs)) for s in subs]
        await asyncio.wait_for(asyncio.gather(*(s.connected.wait() for s in subs)), timeout=120)
        start = time.monotonic()
        rss.append((0.0, rss_kib(pid)))
        clients = [
            asyncio.create_task(client_loop(server.url, n, prefix, args.rate, stats, stop_clients))
            for n in range(args.clients)
        ]
        while (elapsed := time.monotonic() - start) < args.duration:
            await asyncio.sleep(min(10.0, args.duration - elapsed))
            rss.append((time.monotonic() - start, rss_kib(pid)))
            t, kib = rss[-1]
            print(
                f"  t={t:5.0f}s ops={stats.ops} errors={len(stats.errors)} rss={kib} KiB",
                flush=True,
            )
        stop_clients.set()
        await asyncio.wait_for(asyncio.gather(*clients), timeout=120)
        log = await event_log(server.url, prefix)
        newest = log[-1][0] if log else 0
        expected = {s.n: _expected(s, log) for s in subs}
        await _drain(subs, expected, within=60.0)
        stop_subs.set()
        for task in sub_tasks:
            task.cancel()
        await asyncio.gather(*sub_tasks, return_exceptions=True)
        lost = duplicated = 0
        for s in subs:
            got = set(s.received)
            lost += len(set(expected[s.n]) - got)
            duplicated += len(s.received) - len(got)
        rss.append((time.monotonic() - start, rss_kib(pid)))
    finally:
        server.stop()
    warm = rss[1][1] if len(rss) > 2 else rss[0][1]
    return {
        "duration_s": args.duration,
        "clients": args.clients,
        "subscribers": args.subscribers,
        "ops": stats.ops,
        "events": len(log),
        "newest_event_id": newest,
        "deliveries": sum(len(s.received) for s in subs),
        "errors": len(stats.errors),
        "first_errors": stats.errors[:5],
        "subscriber_reconnects": stats.reconnects,
        "events_lost": lost,
        "events_duplicated": duplicated,
        "rss_kib_start": rss[0][1],
        "rss_kib_after_warmup": warm,
        "rss_kib_end": rss[-1][1],
        "rss_kib_samples": [kib for _, kib in rss],
        "storage": database_url.split(":", 1)[0],
    }


async def _drain(subs: list[Subscriber], expected: dict[int, list[int]], within: float) -> None:
    """Wait until each subscriber has seen its newest expected event (or ``within`` passes)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:  # the streams update `received` meanwhile
        if all(
            not expected[s.n] or (s.received and s.received[-1] >= expected[s.n][-1]) for s in subs
        ):
            return
        await asyncio.sleep(0.2)


def _expected(sub: Subscriber, log: list[tuple[int, str]]) -> list[int]:
    return [i for i, key in log if matches(sub.patterns, key)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--duration", type=float, default=120.0, help="seconds of load (default 120)"
    )
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--rate", type=float, default=2.0, help="operations per second per client")
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    parser.add_argument(
        "--max-rss-growth",
        type=float,
        default=0.5,
        help="fail if RSS grows more than this fraction after warm-up (default 0.5)",
    )
    args = parser.parse_args(argv)
    report = asyncio.run(soak(args))
    print(json.dumps(report, indent=2))
    growth = (report["rss_kib_end"] - report["rss_kib_after_warmup"]) / max(
        report["rss_kib_after_warmup"], 1
    )
    failed = []
    if report["errors"]:
        failed.append(f"{report['errors']} errors")
    if report["events_lost"]:
        failed.append(f"{report['events_lost']} events lost")
    if growth > args.max_rss_growth:
        failed.append(f"RSS grew {growth:.0%} after warm-up")
    print("soak: " + ("FAILED: " + "; ".join(failed) if failed else "passed"), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
