"""The MCP figure of ``agentfield-asgi bench``: a ``memory_get`` tool call over Streamable
HTTP at concurrency 1, call by call in turn with the REST ``get`` of the same key."""

from __future__ import annotations

from typing import Any

from .client import BenchClient
from .measure import closed_loop_paired, summarize


def mcp_available() -> bool:
    try:
        import mcp  # noqa: F401
    except ImportError:
        return False
    return True


async def mcp_get_vs_rest(url: str, *, total: int) -> dict[str, Any]:
    """p50/p99 of the ``memory_get`` tool (MCP session on ``url``/mcp) and of the REST get,
    and the MCP call's p50 overhead (ms)."""
    import httpx
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async with (
        BenchClient(url) as rest,
        httpx.AsyncClient(timeout=30.0) as http,
        streamable_http_client(f"{url}/mcp", http_client=http) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()

        async def tool_get(i: int) -> None:
            result = await session.call_tool("memory_get", {"key": "bench-0", "scope": "global"})
            if result.isError:
                raise RuntimeError(str(result.structuredContent))

        measured = await closed_loop_paired(
            {
                "mcp_get_c1": tool_get,
                "rest_get_c1": lambda i: rest.get("bench-0", scope="global"),
            },
            concurrency=1,
            total=total,
        )
    out: dict[str, Any] = {name: summarize(*raw).as_dict() for name, raw in measured.items()}
    out["overhead_p50_ms"] = round(out["mcp_get_c1"]["p50_ms"] - out["rest_get_c1"]["p50_ms"], 4)
    return out
