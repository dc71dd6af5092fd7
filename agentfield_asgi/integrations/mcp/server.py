"""The MCP server (the ``mcp`` SDK's low-level :class:`Server`) wired to the memory tools
and resources. Transports (stdio, Streamable HTTP) run the object this builds."""

from __future__ import annotations

import secrets
import weakref
from collections.abc import Iterable
from typing import Any

import mcp.types as types
from mcp.server.lowlevel import NotificationOptions, Server
from mcp.server.lowlevel.helper_types import ReadResourceContents
from mcp.server.models import InitializationOptions
from mcp.shared.exceptions import McpError
from pydantic import AnyUrl

from ...codec import dumps
from ...context import ExecutionContext
from ...errors import AgentFieldError
from .backend import MemoryBackend, ToolError
from .caller import Caller, acting_as, caller_of
from .resources import URI_TEMPLATE, Subscriptions, list_resources, read_resource
from .tools import TOOLS, run_tool

SERVER_NAME = "agentfield-memory"
INSTRUCTIONS = (
    "Shared, persistent memory for agents. Store with memory_set, read with memory_get "
    "(looks in workflow, session, actor, then global memory), count with memory_increment, "
    "update safely with memory_compare_and_set. Memory is shared with other agents: use "
    "scope='global' for facts everyone should see."
)
RESOURCE_ERROR = -32002  # MCP's "resource not found" / resource error code


def _text(body: Any) -> list[types.ContentBlock]:
    return [types.TextContent(type="text", text=dumps(body).decode())]


def tool_result(body: dict[str, Any]) -> types.CallToolResult:
    """A success: the REST body as JSON text and as structured content."""
    return types.CallToolResult(content=_text(body), structuredContent=body, isError=False)


def tool_error(exc: ToolError) -> types.CallToolResult:
    """A failure as a tool result (``isError``): the protocol's error body, so the model
    reads the code and message and the session goes on."""
    body = exc.to_body()
    return types.CallToolResult(content=_text(body), structuredContent=body, isError=True)


class MemoryMCPServer:
    """The memory tools and resources on one :class:`MemoryBackend`.

    ``server`` is the SDK's low-level server; run it on any of the SDK's transports with
    :meth:`initialization_options`.
    """

    def __init__(
        self, backend: MemoryBackend, *, version: str = "", session_per_client: bool = False
    ) -> None:
        self.backend = backend
        self.session_per_client = session_per_client
        """Give each MCP session a session id of its own (``mcp-<hex>``) as its default."""
        self._client_sessions: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
        self.server: Server[Any, Any] = Server(
            SERVER_NAME, version=version or None, instructions=INSTRUCTIONS
        )
        self._subscriptions: weakref.WeakKeyDictionary[Any, Subscriptions] = (
            weakref.WeakKeyDictionary()
        )
        self._register()

    def initialization_options(self) -> InitializationOptions:
        options = self.server.create_initialization_options(NotificationOptions(), {})
        if options.capabilities.resources is not None:
            options.capabilities.resources.subscribe = True  # handled below
        return options

    def request_context(self) -> ExecutionContext | None:
        """The context of this message: the HTTP request's headers (none on stdio), and with
        ``session_per_client`` the MCP session's own session id unless the request names one."""
        request = self.server.request_context.request
        headers = getattr(request, "headers", None)
        ctx = ExecutionContext.from_headers(headers) if headers is not None else None
        if self.session_per_client and (ctx is None or ctx.session_id is None):
            session = self.server.request_context.session
            session_id = self._client_sessions.get(session)
            if session_id is None:
                session_id = self._client_sessions[session] = f"mcp-{secrets.token_hex(8)}"
            ctx = (ctx or ExecutionContext()).with_updates(session_id=session_id)
        return ctx

    def caller(self) -> Caller | None:
        """Whose grants this message runs with: the key of its MCP session (None on stdio)."""
        return caller_of(self.server.request_context.request)

    def session_subscriptions(self) -> Subscriptions:
        session = self.server.request_context.session
        subs = self._subscriptions.get(session)
        if subs is None:
            ref = weakref.ref(session)  # a value holding its key would keep it alive

            async def notify(uri: str) -> None:
                live = ref()
                if live is None:
                    raise ConnectionError("the MCP session has ended")
                await live.send_resource_updated(AnyUrl(uri))

            subs = self._subscriptions[session] = Subscriptions(self.backend, notify)
        return subs

    async def aclose(self) -> None:
        for subs in list(self._subscriptions.values()):
            await subs.close()

    def _register(self) -> None:
        server = self.server

        @server.list_tools()
        async def _list_tools() -> list[types.Tool]:
            return [
                types.Tool(name=t.name, description=t.description, inputSchema=t.input_schema())
                for t in TOOLS
            ]

        # Arguments are validated by the memory routes (same codes as REST), not by the SDK.
        @server.call_tool(validate_input=False)
        async def _call_tool(name: str, arguments: dict[str, Any]) -> types.CallToolResult:
            try:
                with acting_as(self.caller()):
                    body = await run_tool(self.backend, name, arguments, self.request_context())
            except AgentFieldError as exc:  # the key was removed meanwhile
                return tool_error(ToolError(exc.message, exc.code, exc.details, exc.status))
            except ToolError as exc:
                return tool_error(exc)
            return tool_result(body)

        @server.list_resources()
        async def _list_resources() -> list[types.Resource]:
            with acting_as(self.caller()):
                items = await _resource_call(list_resources(self.backend, self.request_context()))
            return [types.Resource.model_validate(item) for item in items]

        @server.list_resource_templates()
        async def _list_templates() -> list[types.ResourceTemplate]:
            return [
                types.ResourceTemplate(
                    uriTemplate=URI_TEMPLATE,
                    name="memory key",
                    description="One stored key (scope id and key percent-encoded).",
                    mimeType="application/json",
                )
            ]

        @server.read_resource()
        async def _read(uri: AnyUrl) -> Iterable[ReadResourceContents]:
            with acting_as(self.caller()):
                record = await _resource_call(read_resource(self.backend, str(uri)))
            return [ReadResourceContents(dumps(record).decode(), "application/json")]

        @server.subscribe_resource()
        async def _subscribe(uri: AnyUrl) -> None:
            caller = self.caller()
            with acting_as(caller):
                await _resource_call(self.session_subscriptions().subscribe(str(uri), caller))

        @server.unsubscribe_resource()
        async def _unsubscribe(uri: AnyUrl) -> None:
            await self.session_subscriptions().unsubscribe(str(uri))


async def _resource_call(awaitable: Any) -> Any:
    """Resource requests answer failures as JSON-RPC errors carrying the protocol's body."""
    try:
        return await awaitable
    except AgentFieldError as exc:
        raise McpError(
            types.ErrorData(code=RESOURCE_ERROR, message=exc.message, data=exc.to_body())
        ) from None
    except ToolError as exc:
        raise McpError(
            types.ErrorData(code=RESOURCE_ERROR, message=exc.message, data=exc.to_body())
        ) from None
