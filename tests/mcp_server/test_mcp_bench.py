"""The bench's MCP figure: a memory_get tool call over Streamable HTTP beside the REST get."""

from __future__ import annotations

from agentfield_asgi.bench.mcp import mcp_get_vs_rest
from agentfield_asgi.bench.report import targets
from agentfield_asgi.client import MemoryClient
from agentfield_asgi.testing import ServerProcess


async def test_bench_measures_the_tool_call_beside_rest(mcp_server: ServerProcess) -> None:
    async with MemoryClient(mcp_server.url) as rest:
        await rest.global_scope.set("bench-0", {"n": 0})
    measured = await mcp_get_vs_rest(mcp_server.url, total=30)
    for name in ("mcp_get_c1", "rest_get_c1"):
        assert measured[name]["n"] == 30 and measured[name]["errors"] == 0
        assert 0 < measured[name]["p50_ms"] <= measured[name]["p99_ms"]
    row = next(
        r
        for r in targets({"sqlite": {"mcp": measured}})
        if r["target"].startswith("MCP memory_get")
    )
    assert row["value"] == measured["mcp_get_c1"]["p50_ms"] and row["limit"] == 3.0
