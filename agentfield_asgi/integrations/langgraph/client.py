"""The HTTP calls the store makes (one method per route), over our SDK's transports."""

from __future__ import annotations

from typing import Any

from ...client.transports import API_PREFIX, Transport
from ...context import HEADER_AGENT_NODE_ID, SCOPE_HEADERS
from ...errors import MemoryAccessError

MAX_BATCH_OPS = 1000  # the server's default ``max_batch_ops``


class ScopeCalls:
    """Requests to one scope id of the memory service through ``transport``."""

    def __init__(
        self, transport: Transport, scope: str, scope_id: str, agent_node_id: str | None
    ) -> None:
        self.transport = transport
        self.scope = scope
        self.headers: dict[str, str] = {}
        if scope in SCOPE_HEADERS:
            self.headers[SCOPE_HEADERS[scope]] = scope_id
        if agent_node_id:
            self.headers[HEADER_AGENT_NODE_ID] = agent_node_id

    async def post(self, route: str, body: dict[str, Any]) -> Any:
        reply = await self.transport.request(
            "POST", f"{API_PREFIX}/memory/{route}", json=body, headers=self.headers
        )
        if not reply.ok:
            message, code, details = reply.error_fields()
            raise MemoryAccessError(message, status=reply.status, code=code, details=details)
        return reply.body

    async def get_many(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        if not keys:
            return {}
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(keys), MAX_BATCH_OPS):
            body = {"keys": keys[start : start + MAX_BATCH_OPS], "scope": self.scope}
            found.update((await self.post("get_many", body))["records"])
        return found

    async def write(self, ops: list[dict[str, Any]]) -> None:
        """Apply ``ops`` (set/delete) with the batch route: one transaction per 1,000 ops."""
        for start in range(0, len(ops), MAX_BATCH_OPS):
            chunk = [{**op, "scope": self.scope} for op in ops[start : start + MAX_BATCH_OPS]]
            await self.post("batch", {"ops": chunk})

    async def query(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = (await self.post("query", {**body, "scope": self.scope}))[
            "records"
        ]
        return records

    async def keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix`` (paged by the server, values not sent)."""
        out: list[str] = []
        after: str | None = None
        while True:
            page = await self.post(
                "keys", {"scope": self.scope, "prefix": prefix, "after": after, "limit": 10_000}
            )
            out.extend(page["keys"])
            after = page["next"]
            if after is None:
                return out
