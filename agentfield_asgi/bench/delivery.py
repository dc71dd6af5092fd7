"""Event delivery latency: write -> received by N SSE subscribers, and server memory
per subscriber. Subscribers are raw asyncio sockets with minimal parsing, so a
thousand of them in one client process measure the server, not the client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from ..testing import rss_kib
from .measure import percentile


class _Subscriber:
    def __init__(self) -> None:
        self.received: dict[str, int] = {}  # key -> perf_counter_ns at arrival
        self.task: asyncio.Task[None] | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self, host: str, port: int, path: str, headers: dict[str, str]) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        self.writer = writer
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n"
        writer.write(f"{request}{extra}\r\n".encode())
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        if b" 200 " not in head.split(b"\r\n", 1)[0]:
            raise RuntimeError(f"SSE subscribe failed: {head[:200]!r}")
        self.task = asyncio.create_task(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        buffer = b""
        marker = b'"key":"'
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                return
            now = time.perf_counter_ns()
            buffer += chunk
            while (at := buffer.find(marker)) >= 0:
                end = buffer.find(b'"', at + len(marker))
                if end < 0:
                    break
                self.received.setdefault(buffer[at + len(marker) : end].decode(), now)
                buffer = buffer[end:]
            if len(buffer) > 65536:
                buffer = buffer[-1024:]

    async def close(self) -> None:
        if self.task:
            self.task.cancel()
        if self.writer:
            self.writer.close()


async def delivery_latency(
    base_url: str,
    write: Callable[[str], Awaitable[object]],
    *,
    subscribers: int,
    events: int,
    server_pid: int | None,
    headers: dict[str, str] | None = None,
    interval_s: float = 0.02,
) -> dict[str, float]:
    """Open ``subscribers`` SSE streams on pattern ``dlv-*``, make ``events`` writes one at a
    time, and measure arrival - acknowledgement for every (subscriber, event)."""
    parts = urlsplit(base_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = parts.path.rstrip("/") + "/api/v1/memory/events/sse?patterns=dlv-*"
    rss_before = rss_kib(server_pid) if server_pid else 0
    subs = [_Subscriber() for _ in range(subscribers)]
    for start in range(0, subscribers, 100):  # connect in waves: the accept queue is finite
        await asyncio.gather(
            *(s.connect(host, port, path, headers or {}) for s in subs[start : start + 100])
        )
    await asyncio.sleep(0.5)
    rss_after = rss_kib(server_pid) if server_pid else 0
    acks: dict[str, int] = {}
    sent: dict[str, int] = {}
    run = f"{time.time_ns() % 10**9}"
    try:
        for i in range(events):
            key = f"dlv-{run}-{i}"
            sent[key] = time.perf_counter_ns()
            await write(key)
            acks[key] = time.perf_counter_ns()
            await asyncio.sleep(interval_s)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(len(s.received) < events for s in subs):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    finally:
        await asyncio.gather(*(s.close() for s in subs))
    latencies = sorted(
        max(0.0, (s.received[k] - t) / 1e6)
        for s in subs
        for k, t in acks.items()
        if k in s.received
    )
    from_send = sorted(
        (s.received[k] - t) / 1e6 for s in subs for k, t in sent.items() if k in s.received
    )
    expected = subscribers * events
    return {
        "subscribers": subscribers,
        "events": events,
        "delivered": len(latencies),
        "lost": expected - len(latencies),
        "p50_ms": round(percentile(latencies, 0.5), 3),
        "p99_ms": round(percentile(latencies, 0.99), 3),
        "max_ms": round(latencies[-1], 3) if latencies else float("nan"),
        # From the write's request to arrival (includes the write itself): an event that
        # arrives before the writer has read its reply counts 0 above.
        "from_write_p50_ms": round(percentile(from_send, 0.5), 3),
        "from_write_p99_ms": round(percentile(from_send, 0.99), 3),
        "server_rss_kib_per_subscriber": round((rss_after - rss_before) / subscribers, 1)
        if server_pid
        else float("nan"),
    }
