"""``Agent``: an ASGI app that is an agent node.

* ``@app.reasoner`` exposes an async function at ``POST /reasoners/{name}`` (JSON body =
  keyword arguments, JSON response = the return value).
* ``app.memory`` is a :class:`~agentfield_asgi.client.MemoryClient` that scopes itself
  from the execution context of the running request.
* ``await app.call("other-node.reasoner", **kwargs)`` goes through the control plane's
  execute route, carrying this execution's context.
* On start-up the node registers (node id, public URL, reasoners) with the control
  plane. ``serve_control_plane=True`` hosts the memory service in this process.

Serve it with ``uvicorn module:app``, or mount it into an existing Starlette/FastAPI
app (compose :meth:`Agent.lifespan`, or let the first request start it).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from . import tracing
from .client.memory import MemoryClient
from .client.transports import Transport, shared_http_transport
from .codec import JSONDecodeError, dumps, loads
from .context import ExecutionContext, current_context
from .errors import (
    INVALID_INPUT,
    INVALID_JSON,
    REASONER_ERROR,
    AgentFieldError,
    BadRequest,
    ExecutionError,
    MemoryAccessError,
    ReasonerNotFound,
)
from .lifecycle import StartOnce, run_hooks, running
from .middleware import SCOPE_NEW_WORKFLOW_KEY, ExecutionContextMiddleware
from .server.app import MemoryService, create_memory_app
from .server.http import error_response, json_response
from .settings import Settings

log = logging.getLogger("agentfield_asgi.agent")

DEFAULT_CONTROL_PLANE_URL = "http://127.0.0.1:8080"
Reasoner = Callable[..., Awaitable[Any]]
R = TypeVar("R", bound=Reasoner)
Hook = Callable[[], Any]


class Agent:
    """An agent node. See the module docstring.

    ``node_id``: this node's name. ``control_plane_url`` / ``public_url`` default to
    ``AGENTFIELD_CONTROL_PLANE_URL`` / ``AGENTFIELD_PUBLIC_URL`` (the control plane at
    ``http://127.0.0.1:8080`` when neither is set). ``public_url`` is where the control
    plane reaches this node (include the mount prefix when mounted). ``actor_id`` is the
    actor scope this node uses when a request carries none (default: ``node_id``).
    ``serve_control_plane=True`` runs the memory service (and execute routes) in this
    process, on ``database_url``; memory then calls the store directly.
    """

    def __init__(
        self,
        node_id: str,
        *,
        control_plane_url: str | None = None,
        public_url: str | None = None,
        serve_control_plane: bool = False,
        database_url: str | None = None,
        api_key: str | None = None,
        actor_id: str | None = None,
        settings: Settings | None = None,
    ) -> None:
        if not node_id or "." in node_id:
            raise ValueError("node_id must be a non-empty string without '.'")
        base = settings or Settings.from_env()
        self.settings = base.with_updates(
            **{
                k: v
                for k, v in {
                    "control_plane_url": control_plane_url,
                    "public_url": public_url,
                    "database_url": database_url,
                }.items()
                if v is not None
            }
        )
        self.node_id = node_id
        self.public_url = self.settings.public_url.rstrip("/") if self.settings.public_url else None
        self.service: MemoryService | None = None
        transport: Transport
        if serve_control_plane:
            self.service = create_memory_app(settings=self.settings)
            transport = self.service.in_process_transport(
                timeout=self.settings.client_timeout_seconds
            )
            self.control_plane_url = self.public_url
        else:
            self.control_plane_url = (
                self.settings.control_plane_url or DEFAULT_CONTROL_PLANE_URL
            ).rstrip("/")
            key = api_key or (self.settings.api_keys[0] if self.settings.api_keys else None)
            transport = shared_http_transport(self.control_plane_url, api_key=key)
        self.transport = transport
        self.memory = MemoryClient(
            transport=transport,
            agent_node_id=node_id,
            default_actor_id=actor_id or node_id,
            timeout=self.settings.client_timeout_seconds,
        )
        self._reasoners: dict[str, Reasoner] = {}
        self._on_start: list[Hook] = []
        self._on_stop: list[Hook] = []
        self._once = StartOnce()
        self._register_task: asyncio.Task[None] | None = None
        self.registered = asyncio.Event()
        app: ASGIApp = Starlette(routes=self._routes(), lifespan=self._starlette_lifespan)
        if tracing.enabled():  # continue the caller's trace (traceparent) in each reasoner
            app = tracing.TracingMiddleware(app, service_name=node_id)
        self._app = app

    # ------------------------------------------------------------ reasoners
    @overload
    def reasoner(self, fn: R, /) -> R: ...
    @overload
    def reasoner(self, fn: None = None, /, *, name: str | None = None) -> Callable[[R], R]: ...

    def reasoner(self, fn: R | None = None, /, *, name: str | None = None) -> R | Callable[[R], R]:
        """Expose an async function at ``POST /reasoners/{name}`` (default: its own name).

        Use as ``@app.reasoner`` or ``@app.reasoner(name="...")``; the function is
        returned unchanged, so it can still be called directly.
        """

        def register(func: R) -> R:
            if not _is_async(func):
                raise TypeError(f"reasoner {func.__name__!r} must be an async function")
            reasoner_name = name or func.__name__
            if "." in reasoner_name or "/" in reasoner_name:
                raise ValueError("reasoner names must not contain '.' or '/'")
            self._reasoners[reasoner_name] = func
            return func

        return register(fn) if fn is not None else register

    @property
    def reasoners(self) -> list[str]:
        return sorted(self._reasoners)

    async def call(self, target: str, /, **kwargs: Any) -> Any:
        """Run ``"node_id.reasoner"`` through the control plane and return its result.

        The call carries this execution's workflow, session and actor; the callee runs as
        a child execution. Raises :class:`~agentfield_asgi.errors.ExecutionError` with the
        callee's message when it fails, or with status 404 when the target is unknown.
        """
        ctx = current_context()
        headers = ctx.with_updates(agent_node_id=self.node_id).to_headers() if ctx else {}
        reply = await self.transport.request(
            "POST",
            f"/api/v1/execute/{target}",
            json={"input": kwargs},
            headers=headers or {"X-Agent-Node-ID": self.node_id},
            timeout_seconds=self.settings.execute_timeout_seconds,
        )
        if reply.ok:
            return reply.body["result"]
        message, code, details = reply.error_fields()
        raise ExecutionError(message, status=reply.status, code=code, details=details)

    # ------------------------------------------------------------ lifecycle
    def on_start(self, hook: Hook) -> Hook:
        """Run ``hook`` (sync or async) when the node starts, after registration."""
        self._on_start.append(hook)
        return hook

    def on_stop(self, hook: Hook) -> Hook:
        """Run ``hook`` (sync or async) when the node stops, before connections close."""
        self._on_stop.append(hook)
        return hook

    @property
    def started(self) -> bool:
        return self._once.started

    async def start(self) -> None:
        """Start the hosted service (if any), register, run start hooks; idempotent."""
        await self._once.run(self._start)

    async def _start(self) -> None:
        if self.service is not None:
            await self.service.start()
            from .server.workflows import control_plane

            control_plane(self.service).attach_local_node(self.node_id, self._app)
        if not await self._register():
            self._register_task = asyncio.get_running_loop().create_task(
                self._register_until_done()
            )
        await self.memory.events.start()  # on_change subscriptions live with the node
        await run_hooks(self._on_start)

    async def stop(self) -> None:
        """Run stop hooks, stop registration retries, close connections and the service."""
        if not self._once.started:
            return
        self._once.started = False
        await run_hooks(reversed(self._on_stop))
        if self._register_task is not None:
            self._register_task.cancel()
            await asyncio.gather(self._register_task, return_exceptions=True)
            self._register_task = None
        await self.memory.events.stop()
        await self.transport.aclose()
        if self.service is not None:
            await self.service.stop()

    def lifespan(self, app: Any = None) -> contextlib.AbstractAsyncContextManager[None]:
        """Async context manager for a host app's lifespan: start, then stop."""
        return running(self)

    def _starlette_lifespan(self, app: Any) -> contextlib.AbstractAsyncContextManager[None]:
        return self.lifespan(app)

    async def _register(self) -> bool:
        if self.public_url is None and self.service is None:
            log.warning(
                "agent %s has no public URL (AGENTFIELD_PUBLIC_URL): the control plane "
                "cannot forward calls to it",
                self.node_id,
            )
        body = {"node_id": self.node_id, "base_url": self.public_url, "reasoners": self.reasoners}
        reply = await self.transport.request("POST", "/api/v1/nodes/register", json=body)
        if reply.ok:
            self.registered.set()
            return True
        log.warning("agent %s could not register: %s", self.node_id, reply.error_fields()[0])
        return False

    async def _register_until_done(self) -> None:
        delay = 0.5
        while not await self._register():
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    # ------------------------------------------------------------ ASGI
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and not self._once.started:
            await self.start()  # mounted without the host composing our lifespan
        await self._app(scope, receive, send)

    def _routes(self) -> list[BaseRoute]:
        routes: list[BaseRoute] = [
            Route("/health", self._health, methods=["GET"]),
            Route("/reasoners", self._health, methods=["GET"]),
            Mount(
                "/reasoners",
                routes=[Route("/{name}", self._run_reasoner, methods=["POST"])],
                middleware=[Middleware(ExecutionContextMiddleware, node_id=self.node_id)],
            ),
        ]
        if self.service is not None:
            routes.append(Mount("", app=self.service.app))
        return routes

    async def _health(self, request: Request) -> Response:
        return json_response({"status": "ok", "node_id": self.node_id, "reasoners": self.reasoners})

    async def _run_reasoner(self, request: Request) -> Response:
        name = request.path_params["name"]
        fn = self._reasoners.get(name)
        try:
            if fn is None:
                raise ReasonerNotFound(
                    f"agent node {self.node_id!r} has no reasoner {name!r}",
                    details={
                        "node_id": self.node_id,
                        "reasoner": name,
                        "reasoners": self.reasoners,
                    },
                )
            kwargs = _kwargs_for(fn, await request.body())
        except AgentFieldError as exc:
            return error_response(exc)
        # The root of a workflow started by this request: completed before answering,
        # so the caller never sees its workflow memory linger.
        root = current_context() if request.scope.get(SCOPE_NEW_WORKFLOW_KEY) else None
        try:
            body = dumps(await fn(**kwargs))
        except Exception as exc:
            if root is not None:
                await self.complete_workflow(root, failed=True)
            return self._failure(name, exc)
        if root is not None:
            await self.complete_workflow(root)
        return Response(body, media_type="application/json")

    async def complete_workflow(self, ctx: ExecutionContext, failed: bool = False) -> None:
        """Tell the control plane that the workflow ``ctx`` started here is over, so its
        workflow memory is removed. Pass it as ``on_workflow_end`` to
        :class:`~agentfield_asgi.middleware.ExecutionContextMiddleware` in a host app."""
        status = "failed" if failed else "succeeded"
        reply = await self.transport.request(
            "POST", f"/api/v1/workflows/{ctx.workflow_id}/complete", json={"status": status}
        )
        if not reply.ok:
            log.warning(
                "could not complete workflow %s: %s", ctx.workflow_id, reply.error_fields()[0]
            )

    def _failure(self, name: str, exc: Exception) -> Response:
        details: dict[str, Any] = {
            "node_id": self.node_id,
            "reasoner": name,
            "type": type(exc).__name__,
        }
        if isinstance(exc, AgentFieldError) and not isinstance(
            exc, MemoryAccessError | ExecutionError
        ):
            return error_response(exc)  # raised on purpose by the reasoner, e.g. BadRequest
        if isinstance(exc, MemoryAccessError | ExecutionError):
            details["cause"] = {"code": exc.code, "status": exc.status, **exc.details}
        else:
            log.exception("reasoner %s.%s failed", self.node_id, name)
        message = str(exc) or type(exc).__name__
        return json_response({"error": message, "code": REASONER_ERROR, "details": details}, 500)


def _kwargs_for(fn: Reasoner, body: bytes) -> dict[str, Any]:
    """The JSON body as keyword arguments ``fn`` accepts (400 otherwise)."""
    try:
        kwargs = loads(body) if body.strip() else {}
    except JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON: {exc}", code=INVALID_JSON) from None
    if not isinstance(kwargs, dict):
        raise BadRequest("the body must be a JSON object of keyword arguments", code=INVALID_INPUT)
    try:
        inspect.signature(fn).bind(**kwargs)
    except TypeError as exc:
        raise BadRequest(f"invalid arguments: {exc}", code=INVALID_INPUT) from None
    return kwargs


def _is_async(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn)


__all__ = ["Agent"]
