"""``create_memory_app()``: the memory service as a mountable ASGI app.

Starlette does not run a mounted app's lifespan, so the service starts in one of
two ways, whichever comes first: the host composes :attr:`MemoryService.lifespan`
into its own, or the first request starts it (once, under a lock). Standalone,
``service.app`` runs its own lifespan.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import tracing
from ..client.transports.base import DEFAULT_TIMEOUT, Transport
from ..errors import AgentFieldError, StorageUnavailable
from ..events import EventHub
from ..lifecycle import StartOnce, run_hooks, running
from ..settings import Settings
from ..store import open_store
from ..store.base import Store
from ..tracing import TracingMiddleware
from . import (
    event_routes,
    executions,
    extension_routes,
    memory_routes,
    metrics,
    nodes,
    openapi,
    query_routes,
    readiness,
    routes,
    ui_routes,
    vector_routes,
    workflows,
)
from .access import KeyRing
from .auth import route_path, wrap_security
from .http import error_response, json_response, name_request_unknown_fields
from .in_process import InProcessTransport
from .unsupported import unsupported_feature

log = logging.getLogger("agentfield_asgi.server")

# Feature modules of this package; each has ``routes(service) -> list[route]``. A route
# with ``at_root = True`` is served outside ``/api/v1`` (e.g. the inspector page); one with
# ``public = True`` needs no API key (it must serve no memory data).
ROUTE_MODULES = (
    memory_routes,
    event_routes,
    workflows,
    nodes,
    executions,
    extension_routes,
    query_routes,
    openapi,
    vector_routes,
    ui_routes,
    readiness,
    metrics,
)
"""The route modules the service serves, in order (each has ``routes(service)``)."""


class MemoryService:
    """The memory service: store, event hub, background tasks and the ASGI app.

    Attributes: ``app`` (a :class:`MemoryApp`: mount it), ``lifespan`` (compose it),
    ``store``, ``hub``, ``settings``.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store: Store = open_store(settings)
        self.hub = EventHub(
            self.store,
            queue_size=settings.subscriber_queue_size,
            max_per_client=settings.max_subscribers_per_client,
        )
        self._once = StartOnce()
        self._tasks: list[asyncio.Task[None]] = []
        self._on_start: list[Callable[[], Any]] = []
        self._on_stop: list[Callable[[], Any]] = []
        # Validated now: a bad keys file stops the service before it serves anything.
        self.keys = KeyRing(settings.api_keys, settings.api_keys_file)
        if settings.api_keys_file:
            self.on_start(self._reload_keys_on_sighup)
        self.metrics: Any = None
        """The Prometheus metrics (:mod:`.metrics`), None without prometheus-client."""
        self.app = MemoryApp(self._build_app(), self)

    # ------------------------------------------------------------ lifecycle
    @property
    def started(self) -> bool:
        return self._once.started

    def in_process_transport(self, *, timeout: float = DEFAULT_TIMEOUT) -> Transport:
        """A client transport to this service, in this process (no socket)."""
        return InProcessTransport(self, timeout=timeout)

    async def ready(self) -> Store:
        """The open store, starting the service first if nobody has (lazy start)."""
        if not self._once.started:
            await self.start()
        return self.store

    async def start(self) -> None:
        """Open storage and start background work; safe to call many times, concurrently."""
        await self._once.run(self._start)

    async def _start(self) -> None:
        try:
            await self.store.open()
        except AgentFieldError:
            raise
        except Exception as exc:
            log.error("cannot open storage %s: %s", redact_url(self.store.url), exc)
            raise StorageUnavailable(f"cannot open storage: {exc}") from exc
        await self.hub.start()
        await run_hooks(self._on_start)
        log.info("memory service started on %s storage", self.store.kind)

    async def stop(self) -> None:
        """Stop background work, end live streams, finish queued writes, close storage.

        A request arriving meanwhile waits, then starts the service again (lazily).
        """
        await self._once.stop(self._stop)

    async def _stop(self) -> None:
        await run_hooks(reversed(self._on_stop))
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self.hub.stop()
        await self.store.close()

    def _reload_keys_on_sighup(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGHUP, self.keys.reload)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, Windows
            log.warning("SIGHUP cannot reload the API keys file here; restart to reload it")
            return
        self.on_stop(lambda: loop.remove_signal_handler(signal.SIGHUP))

    def spawn(self, coro: Any) -> None:
        """Run a background task for the life of the service."""
        self._tasks.append(asyncio.get_running_loop().create_task(coro))

    def on_start(self, hook: Callable[[], Any]) -> None:
        self._on_start.append(hook)

    def on_stop(self, hook: Callable[[], Any]) -> None:
        self._on_stop.append(hook)

    def lifespan(self, app: Any = None) -> contextlib.AbstractAsyncContextManager[None]:
        """Async context manager to compose into a host app's lifespan."""
        return running(self)

    # ------------------------------------------------------------ ASGI
    async def _health(self, request: Request) -> Response:
        await self.ready()
        return json_response(
            {
                "status": "ok",
                "storage": self.store.kind,
                "vectors": self.store.vector_mode,
                "subscribers": self.hub.subscriber_count,
            }
        )

    def _build_app(self) -> ASGIApp:
        health = Route("/health", self._health, methods=["GET"])
        table = self.route_table = routes.build(
            self, ROUTE_MODULES, extra=[health, *(_mcp_routes(self) if self.settings.mcp else [])]
        )
        self.api_routes: list[BaseRoute] = table.api  # what /api/v1/openapi.json describes
        starlette = Starlette(
            routes=[Mount(routes.API_PREFIX, routes=table.api), *table.root],
            exception_handlers={
                AgentFieldError: _agentfield_error,
                HTTPException: _http_error,
                Exception: _unexpected_error,
            },
            lifespan=self.lifespan,
        )
        app: ASGIApp = _Entry(starlette, self, table.fast)

        paths = [routes.API_PREFIX + r.path for r in table.api if isinstance(r, Route)]
        paths += [r.path for r in table.root if isinstance(r, Route)]
        secured = wrap_security(app, self.settings, table.public_paths, self.keys)
        if not self.settings.observability:
            return secured
        measured = metrics.install(self, secured, paths)
        return TracingMiddleware(measured) if tracing.enabled() else measured


class MemoryApp:
    """The memory service as an ASGI application: what :attr:`MemoryService.app` holds.

    Mount it in a host (``Mount("/agentfield", app=memory.app)``) or serve it alone
    (``uvicorn module:app``); ``service`` is the :class:`MemoryService` it serves. Requests
    pass API-key and CORS checks (when configured), then reach the memory routes; the
    first one starts the service if no lifespan did.
    """

    def __init__(self, app: ASGIApp, service: MemoryService) -> None:
        self._app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)

    def __repr__(self) -> str:
        return f"<MemoryApp storage={self.service.store.kind}>"


def _mcp_routes(service: MemoryService) -> list[Any]:
    try:
        from ..integrations.mcp import http as mcp_http
    except ImportError as exc:
        raise RuntimeError(
            f"serving MCP needs the mcp extra: pip install 'agentfield-asgi[mcp]' ({exc})"
        ) from exc
    return mcp_http.routes(service)


class _Entry:
    """The service's entry point: starts the service on the first HTTP/WebSocket request
    when no lifespan did, and sends the hot POST routes (``fast``: route path -> ASGI
    endpoint) straight to their endpoint, past Starlette's routing and middleware."""

    def __init__(self, app: ASGIApp, service: MemoryService, fast: dict[str, ASGIApp]) -> None:
        self.app = app
        self.service = service
        self.fast = fast

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan" and not self.service.started:
            try:
                await self.service.start()
            except AgentFieldError as exc:
                if scope["type"] == "http":
                    await error_response(exc)(scope, receive, send)
                else:  # websocket: refuse the handshake (1011: server error)
                    await send({"type": "websocket.close", "code": 1011, "reason": exc.message})
                return
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = self.fast.get(route_path(scope))
            if endpoint is not None:
                await endpoint(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _agentfield_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AgentFieldError)
    name_request_unknown_fields(exc, request.scope)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code in (404, 405):
        feature = unsupported_feature(request.url.path)
        if feature is not None:
            return error_response(feature)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return json_response(
        {"error": exc.detail, "code": code, "details": {"path": request.url.path}},
        exc.status_code,
        headers=dict(exc.headers or {}),
    )


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return json_response(
        {"error": "internal server error", "code": AgentFieldError.code, "details": {}}, 500
    )


def redact_url(url: str) -> str:
    """``url`` with its password masked, for logs (the user name stays: it helps, and is
    no secret)."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    userinfo, host = rest.rsplit("@", 1)
    if ":" in userinfo:
        userinfo = userinfo.split(":", 1)[0] + ":***"
    return f"{scheme}://{userinfo}@{host}"


def create_memory_app(
    database_url: str | None = None, *, settings: Settings | None = None, **options: Any
) -> MemoryService:
    """Build the memory service.

    ``database_url``: ``sqlite:///path`` (default ``./agentfield.db``, or
    ``AGENTFIELD_DATABASE_URL``) or ``postgresql://...``. Other keyword options are
    :class:`~agentfield_asgi.settings.Settings` fields. Mount ``service.app`` and
    compose ``service.lifespan`` into the host's lifespan (or rely on lazy start).
    """
    base = settings or Settings.from_env()
    changes = {k: v for k, v in options.items() if v is not None}
    if database_url is not None:
        changes["database_url"] = database_url
    return MemoryService(base.with_updates(**changes) if changes else base)
