"""Prometheus metrics at ``GET /metrics`` (extra ``agentfield-asgi[metrics]``).

With ``prometheus-client`` installed, the service counts requests by route and status
(:class:`MetricsMiddleware`), times them, and follows write groups, the event feed's
lag, subscribers and slow-consumer cut-offs, the vector index, the PostgreSQL pool and
executions. Without it, ``/metrics`` answers 501 saying what to install.

Several worker processes (``serve --workers N``) each count their own share; the
``serve`` command points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before the
workers start, so that every worker writes its values there and whichever worker answers
a scrape reports the sum of all of them (prometheus-client's multiprocess mode). Gauges
are refreshed every :data:`REFRESH_SECONDS` in each worker (and on each scrape).

``/metrics`` needs an API key when keys are configured, unless ``metrics_public``
(``--metrics-public``). Labels never hold keys, scope ids or memory keys: only route
templates, methods, statuses and execution statuses.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..codec import now_us
from ..errors import NOT_IMPLEMENTED, AgentFieldError
from ..store.base import Event
from ..store.timing import GroupTiming
from .auth import route_path
from .routes import Served

if TYPE_CHECKING:
    from .app import MemoryService

try:
    import prometheus_client
except ImportError:  # the [metrics] extra is not installed
    prometheus_client = None  # type: ignore[assignment]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
REFRESH_SECONDS = 2.0
OTHER_ROUTE = "other"
STREAM_SUFFIXES = ("/events/sse", "/events/ws")
"""Streams are counted, but their lifetime is no request latency: not timed."""
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
GROUP_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def multiprocess() -> bool:
    """Whether values go to the shared directory (``PROMETHEUS_MULTIPROC_DIR`` is set)."""
    return MULTIPROC_ENV in os.environ or MULTIPROC_ENV.lower() in os.environ


class Metrics:
    """The service's metrics, in a registry of its own (several services in one process
    each report their own; in multiprocess mode values are summed from files anyway)."""

    def __init__(self) -> None:
        pc = prometheus_client
        self.registry = pc.CollectorRegistry()
        r = self.registry
        self.requests = pc.Counter(
            "agentfield_http_requests",
            "HTTP requests and WebSocket connections answered, by route template and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = pc.Histogram(
            "agentfield_http_request_duration_seconds",
            "Time to answer an HTTP request (event streams excluded), by route template",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.group_size = pc.Histogram(
            "agentfield_write_group_size",
            "Write units committed together in one transaction (group commit)",
            buckets=GROUP_SIZE_BUCKETS,
            registry=r,
        )

        def seconds(name: str, documentation: str) -> Any:
            return pc.Histogram(name, documentation, buckets=LATENCY_BUCKETS, registry=r)

        self.group_seconds = seconds(
            "agentfield_write_group_seconds",
            "From a group's first submitted unit to its durable commit (queue, commit, fsync)",
        )
        self.group_commit_seconds = seconds(
            "agentfield_write_group_commit_seconds",
            "A write group's transaction, first statement to COMMIT returned",
        )
        self.group_fsync_seconds = seconds(
            "agentfield_write_group_fsync_seconds",
            "The WAL fsync making a committed group durable (SQLite writer thread only)",
        )
        self.feed_lag = seconds(
            "agentfield_event_feed_lag_seconds",
            "From an event's commit timestamp to its delivery to this process's subscribers",
        )
        self.events = pc.Counter(
            "agentfield_events_delivered", "Change events delivered by the feed", registry=r
        )
        self.cut_off = pc.Counter(
            "agentfield_subscribers_cut_off",
            "Subscribers disconnected for falling behind (slow consumers)",
            registry=r,
        )
        self.executions = pc.Counter(
            "agentfield_executions",
            "Executions started and finished, by status (running, succeeded, failed)",
            ["status"],
            registry=r,
        )
        gauge: dict[str, Any] = {"registry": r, "multiprocess_mode": "livesum"}
        self.subscribers = pc.Gauge(
            "agentfield_event_subscribers", "Open event subscriptions", **gauge
        )
        self.vector_scopes = pc.Gauge(
            "agentfield_vector_index_scopes", "Vector scopes loaded in memory", **gauge
        )
        self.vector_bytes = pc.Gauge(
            "agentfield_vector_index_bytes", "Bytes of vectors held in memory", **gauge
        )
        self.pool = pc.Gauge(
            "agentfield_db_pool_connections",
            "PostgreSQL pool connections, by state (busy, idle)",
            ["state"],
            **gauge,
        )
        self._cut_off_seen = 0

    # ------------------------------------------------------------ observations
    def observe_group(self, timing: GroupTiming) -> None:
        self.group_size.observe(timing.size)
        self.group_seconds.observe(timing.seconds)
        # Left out where the backend cannot separate them (see GroupTiming).
        if timing.commit_seconds is not None:
            self.group_commit_seconds.observe(timing.commit_seconds)
        if timing.fsync_seconds is not None:
            self.group_fsync_seconds.observe(timing.fsync_seconds)

    def observe_events(self, events: list[Event]) -> None:
        if events:
            self.events.inc(len(events))
            self.feed_lag.observe(max(0.0, (now_us() - events[-1].ts_us) / 1e6))

    def refresh(self, service: MemoryService) -> None:
        """Bring the gauges (and the cut-off count) up to date with this process."""
        self.subscribers.set(service.hub.subscriber_count)
        cut = service.hub.cut_off
        if cut > self._cut_off_seen:
            self.cut_off.inc(cut - self._cut_off_seen)
        self._cut_off_seen = cut
        stats = service.store.stats()
        self.vector_scopes.set(stats.get("vector_index_scopes", 0))
        self.vector_bytes.set(stats.get("vector_index_bytes", 0))
        if "pool_size" in stats:
            self.pool.labels("idle").set(stats["pool_idle"])
            self.pool.labels("busy").set(stats["pool_size"] - stats["pool_idle"])

    def exposition(self) -> bytes:
        """The Prometheus text format: every worker's values in multiprocess mode."""
        pc = prometheus_client
        if multiprocess():
            from prometheus_client import multiprocess as mp

            registry = pc.CollectorRegistry()
            mp.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return bytes(pc.generate_latest(registry))
        return bytes(pc.generate_latest(self.registry))


class RouteNames:
    """Maps a request path to its route template (bounded label values)."""

    def __init__(self, paths: Iterable[str]) -> None:
        self.exact: set[str] = set()
        self.templates: list[tuple[Any, str]] = []
        for path in paths:
            if "{" in path:
                self.templates.append((compile_path(path)[0], path))
            else:
                self.exact.add(path)

    def name(self, path: str) -> str:
        if path in self.exact:
            return path
        for regex, template in self.templates:
            if regex.match(path):
                return template
        return OTHER_ROUTE


class MetricsMiddleware:
    """Counts and times every request (outermost: refusals are counted too)."""

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: RouteNames) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500 if scope["type"] == "http" else 101

        async def send_status(message: Message) -> None:
            nonlocal status
            kind = message["type"]
            if kind in ("http.response.start", "websocket.http.response.start"):
                status = message["status"]
            elif kind == "websocket.close" and status == 101:
                status = 403 if message.get("code") == 1008 else 101
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            path = route_path(scope)
            route = self.routes.name(path)
            method = scope.get("method", "WS")
            self.metrics.requests.labels(route, method, str(status)).inc()
            if scope["type"] == "http" and not path.endswith(STREAM_SUFFIXES):
                self.metrics.latency.labels(route, method).observe(time.perf_counter() - started)


@contextlib.contextmanager
def shared_across_workers() -> Iterator[None]:
    """For ``serve --workers N``: every worker writes its values to one directory (an
    operator's ``PROMETHEUS_MULTIPROC_DIR``, emptied first, or a temporary one removed
    after), so that a scrape answered by any worker reports all of them."""
    if prometheus_client is None:
        yield
        return
    given = os.environ.get(MULTIPROC_ENV)
    path = given or tempfile.mkdtemp(prefix="agentfield-metrics-")
    for stale in glob.glob(os.path.join(path, "*.db")):  # values of an earlier run
        os.remove(stale)
    os.environ[MULTIPROC_ENV] = path  # inherited by the worker processes
    try:
        yield
    finally:
        if given is None:
            del os.environ[MULTIPROC_ENV]
            shutil.rmtree(path, ignore_errors=True)


def install(service: MemoryService, app: ASGIApp, paths: Iterable[str]) -> ASGIApp:
    """Wire the metrics into ``service`` (store, event feed, refresh task) and wrap ``app``;
    without prometheus-client, ``app`` unchanged."""
    if prometheus_client is None:
        return app
    metrics = service.metrics = Metrics()
    unwatch: list[Callable[[], None]] = []

    async def refresh_periodically() -> None:
        while True:
            metrics.refresh(service)
            await asyncio.sleep(REFRESH_SECONDS)

    def started() -> None:
        service.store.group_observer = metrics.observe_group
        unwatch.append(service.store.watch(metrics.observe_events))
        service.spawn(refresh_periodically())

    def stopped() -> None:
        while unwatch:
            unwatch.pop()()
        if multiprocess():
            from prometheus_client import multiprocess as mp

            mp.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]

    service.on_start(started)
    service.on_stop(stopped)
    return MetricsMiddleware(app, metrics, RouteNames(paths))


def routes(service: MemoryService) -> list[Served]:
    async def metrics(request: Request) -> Response:
        current = service.metrics
        if current is None:
            raise AgentFieldError(
                "metrics need prometheus-client: pip install 'agentfield-asgi[metrics]'"
                if service.settings.observability
                else "metrics are off (observability = false)",
                status=501,
                code=NOT_IMPLEMENTED,
            )
        await service.ready()
        current.refresh(service)
        return Response(current.exposition(), media_type=prometheus_client.CONTENT_TYPE_LATEST)

    route = Route("/metrics", metrics, methods=["GET"])
    return [Served(route, at_root=True, public=service.settings.metrics_public)]
