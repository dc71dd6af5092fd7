"""``agentfield-asgi mcp``: the memory MCP server on stdin/stdout.

With ``--url`` it talks to a running memory service over HTTP (``AGENTFIELD_API_KEY``
when that service wants a key); otherwise it opens the database itself
(``--database-url``, else ``AGENTFIELD_DATABASE_URL``, else the embedded default), as
a memory service in this process. stdout carries the protocol: logs go to stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from mcp.server.stdio import stdio_server

from ...client.transports import HTTPTransport, Transport
from ...context import ExecutionContext
from ...server.in_process import InProcessTransport
from ...settings import Settings
from .backend import MemoryBackend
from .server import MemoryMCPServer


def add_mcp_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """The ``mcp`` subcommand's arguments."""
    parser = sub.add_parser("mcp", help="run the memory MCP server on stdio")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--url", help="a running memory service (API key: AGENTFIELD_API_KEY)")
    where.add_argument(
        "--database-url",
        help="open this database directly (default AGENTFIELD_DATABASE_URL or ./agentfield.db)",
    )
    for scope in ("workflow", "session", "actor"):
        parser.add_argument(
            f"--{scope}-id", default=None, help=f"default {scope} id of unscoped calls"
        )
    parser.add_argument(
        "--session-per-client",
        action="store_true",
        help="a fresh session id (mcp-<hex>) for each launch, unless --session-id is given",
    )
    parser.add_argument(
        "--agent-node-id", default="mcp", help="recorded in change events (default: mcp)"
    )
    parser.add_argument(
        "--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"]
    )


def defaults_from_args(args: argparse.Namespace) -> ExecutionContext:
    return ExecutionContext(
        workflow_id=args.workflow_id,
        session_id=args.session_id,
        actor_id=args.actor_id,
        agent_node_id=args.agent_node_id,
    )


async def serve_stdio(
    *,
    url: str | None = None,
    database_url: str | None = None,
    defaults: ExecutionContext | None = None,
    settings: Settings | None = None,
    session_per_client: bool = False,
) -> None:
    """Serve MCP on stdin/stdout until the client closes it."""
    from ...server.app import create_memory_app

    service = None
    transport: Transport
    if url:
        transport = HTTPTransport(url, api_key=os.environ.get("AGENTFIELD_API_KEY") or None)
    else:
        service = create_memory_app(database_url, settings=settings)
        await service.start()
        transport = InProcessTransport(service)
    backend = MemoryBackend(transport, defaults)
    per_client = session_per_client and (defaults is None or defaults.session_id is None)
    mcp_server = MemoryMCPServer(backend, session_per_client=per_client)
    try:
        async with stdio_server() as (read, write):
            await mcp_server.server.run(read, write, mcp_server.initialization_options())
    finally:
        await mcp_server.aclose()
        await backend.aclose()
        if service is not None:
            await service.stop()


def run_mcp(args: argparse.Namespace) -> int:
    """Entry point of ``agentfield-asgi mcp``."""
    import anyio

    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format="%(levelname)s %(name)s: %(message)s",
    )

    async def main() -> None:
        await serve_stdio(
            url=args.url,
            database_url=args.database_url,
            defaults=defaults_from_args(args),
            session_per_client=args.session_per_client,
        )

    anyio.run(main)
    return 0
