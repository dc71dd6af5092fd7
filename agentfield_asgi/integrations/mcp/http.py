"""MCP over Streamable HTTP, served by the memory service (``/mcp``) or mounted by a host.

The SDK's :class:`StreamableHTTPSessionManager` needs a running task group and cannot be
restarted, while the memory service starts lazily and may stop and start again: the
endpoint starts a fresh manager on its first request after each start, in a task of its
own, and stops it with the service. It also ties each MCP session to the API key that
opened it (:mod:`.caller`), so the session's tools and resources run with that key's grants.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ...codec import dumps
from ...errors import Forbidden
from ...server.access import KeyRing
from ...server.auth import presented_key, wrap_security
from ...server.in_process import InProcessTransport
from ...server.routes import Served
from .backend import MemoryBackend
from .caller import SCOPE_KEY, Caller, SessionKeys, session_id_of
from .server import MemoryMCPServer

if TYPE_CHECKING:
    from ...server.app import MemoryService

MCP_PATH = "/mcp"


class StreamableHTTPEndpoint:
    """ASGI endpoint speaking MCP Streamable HTTP for one :class:`MemoryMCPServer`."""

    def __init__(
        self,
        make_server: Callable[[], MemoryMCPServer],
        *,
        max_body_bytes: int,
        ring: KeyRing | None = None,
    ) -> None:
        self._make_server = make_server
        self.ring = ring or KeyRing((), None)
        """The keys the requests were authenticated with (the service's, reloaded on SIGHUP)."""
        self.sessions = SessionKeys()
        self.mcp_server: MemoryMCPServer | None = None
        self.max_body_bytes = max_body_bytes
        self._manager: StreamableHTTPSessionManager | None = None
        self._running: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._lock = asyncio.Lock()

    async def _ensure_started(self) -> StreamableHTTPSessionManager:
        async with self._lock:
            if self._manager is None or self._running is None or self._running.done():
                if self.mcp_server is None:
                    self.mcp_server = self._make_server()
                manager = StreamableHTTPSessionManager(
                    self.mcp_server.server,
                    max_request_body_size=self.max_body_bytes,
                    # A tool call answers one JSON body, not a one-event SSE stream: measured
                    # ~40% less time per call; notifications still flow on the GET stream.
                    json_response=True,
                )
                ready, self._stopping = asyncio.Event(), asyncio.Event()
                self._running = asyncio.get_running_loop().create_task(
                    self._run(manager, ready, self._stopping)
                )
                await ready.wait()
                self._manager = manager
            return self._manager

    @staticmethod
    async def _run(
        manager: StreamableHTTPSessionManager, ready: asyncio.Event, stopping: asyncio.Event
    ) -> None:
        try:
            async with manager.run():
                ready.set()
                await stopping.wait()
        finally:
            ready.set()

    async def stop(self) -> None:
        """End every MCP session and the manager (a later request starts a new one)."""
        task, self._running, self._manager = self._running, None, None
        self._stopping.set()
        self.sessions.clear()
        if self.mcp_server is not None:
            await self.mcp_server.aclose()
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        manager = await self._ensure_started()
        key = presented_key(scope) if self.ring else None
        session_id = session_id_of(scope)
        if session_id is None:
            send = self.sessions.bind(send, key)
            self.sessions.prune(getattr(manager, "_server_instances", None))
        elif not self.sessions.same_key(session_id, key):
            await _refuse(send, "this MCP session was opened with another API key")
            return
        elif scope.get("method") == "DELETE":
            send = self.sessions.forget_when_ended(send, session_id)
        await manager.handle_request({**scope, SCOPE_KEY: Caller(key, self.ring)}, receive, send)


async def _refuse(send: Send, message: str) -> None:
    body = dumps(Forbidden(message, details={"action": "session"}).to_body())
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 403, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def endpoint_for(
    service: MemoryService, *, session_per_client: bool | None = None
) -> StreamableHTTPEndpoint:
    """The MCP endpoint of ``service`` (its memory through the in-process transport),
    stopped with the service."""
    settings = service.settings
    per_client = (
        settings.mcp_session_per_client if session_per_client is None else session_per_client
    )
    endpoint = StreamableHTTPEndpoint(
        # Built on the first request: the service's app does not exist yet while it is built.
        lambda: MemoryMCPServer(
            MemoryBackend(InProcessTransport(service)), session_per_client=per_client
        ),
        # A value is sent as JSON inside a JSON-RPC message: leave room for escaping.
        max_body_bytes=max(4 * 1024 * 1024, 2 * settings.max_value_bytes + 65536),
        ring=service.keys,
    )
    service.on_stop(endpoint.stop)
    return endpoint


def routes(service: MemoryService) -> list[Served]:
    """``/mcp`` at the service's root (behind the service's API keys), for ``serve --mcp``."""
    route = Route(MCP_PATH, endpoint_for(service), methods=["GET", "POST", "DELETE"])
    return [Served(route, at_root=True)]


def create_mcp_app(service: MemoryService, *, session_per_client: bool | None = None) -> ASGIApp:
    """MCP Streamable HTTP over ``service``'s memory, to mount beside ``service.app``:
    ``Route("/mcp", create_mcp_app(memory))``. It asks for the service's API keys like
    the memory routes, and stops with the service (compose ``memory.lifespan``).

    ``session_per_client`` (default: the ``mcp_session_per_client`` setting) gives each MCP
    session a session id of its own for calls whose request carries no ``X-Session-ID``."""
    endpoint = endpoint_for(service, session_per_client=session_per_client)
    # The service's own key ring: the same keys, and a SIGHUP reload reaches /mcp too.
    return wrap_security(endpoint, service.settings, ring=service.keys)
