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
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ..client.transports.base import DEFAULT_TIMEOUT, Transport
from ..errors import AgentFieldError, StorageUnavailable
from ..events import EventHub
from ..lifecycle import StartOnce, run_hooks, running
from ..settings import Settings
from ..store import open_store
from ..store.base import Store
from . import (
    event_routes,
    extension_routes,
    memory_routes,
    openapi,
    routes,
    ui_routes,
    vector_routes,
    workflows,
)
from .auth import route_path, wrap_security
from .http import error_response, json_response
from .in_process import InProcessTransport

log = logging.getLogger("agentfield_asgi.server")

# Feature modules of this package; each has ``routes(service) -> list[route]``. A route
# with ``at_root = True`` is served outside ``/api/v1`` (e.g. the inspector page); one with
# ``public = True`` needs no API key (it must serve no memory data).
ROUTE_MODULES = (
    memory_routes,
    event_routes,
    workflows,
    extension_routes,
    openapi,
    vector_routes,
    ui_routes,
)
"""The route modules the service serves, in order (each has ``routes(service)``)."""


class MemoryService:
    """The memory service: store, event hub, background tasks and the ASGI app.

    Attributes: ``app`` (mount it), ``lifespan`` (compose it), ``store``, ``hub``, ``settings``.
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
        self.app: ASGIApp = self._build_app()

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
        table = self.route_table = routes.build(self, ROUTE_MODULES, extra=[health])
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

        return wrap_security(app, self.settings, table.public_paths)


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
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return json_response(
        {"error": exc.detail, "code": code, "details": {"path": request.url.path}},
        exc.status_code,
        headers=dict(exc.headers or {}),
    )


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return json_response(
        {"error": "internal server error", "code": "internal_error", "details": {}}, 500
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
