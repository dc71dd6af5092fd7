"""Memory for any MCP client: a Model Context Protocol server over the same store.

Needs the extra: ``pip install "agentfield-asgi[mcp]"``. Transports: stdio
(``agentfield-asgi mcp``) and Streamable HTTP (``serve --mcp`` serves ``/mcp``, or
mount :func:`create_mcp_app`). See ``docs/mcp.md``.
"""

from __future__ import annotations

from .backend import MemoryBackend, ToolError
from .http import MCP_PATH, create_mcp_app
from .resources import URI_TEMPLATE, resource_uri
from .server import MemoryMCPServer
from .stdio import serve_stdio
from .tools import TOOLS

__all__ = [
    "MCP_PATH",
    "TOOLS",
    "URI_TEMPLATE",
    "MemoryBackend",
    "MemoryMCPServer",
    "ToolError",
    "create_mcp_app",
    "resource_uri",
    "serve_stdio",
]
