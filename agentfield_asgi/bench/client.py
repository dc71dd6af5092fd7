"""Every benchmark call goes through the project's own SDK (:class:`MemoryClient`), so
ours and the baselines are called by the same client code."""

from __future__ import annotations

from typing import Any

from ..client.memory import MemoryClient
from ..context import ExecutionContext, reset_current_context, set_current_context


class BenchClient:
    """:class:`MemoryClient` over HTTP, with the scope or execution context per call."""

    def __init__(self, base_url: str) -> None:
        self.memory = MemoryClient(base_url)

    async def __aenter__(self) -> BenchClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.memory.aclose()

    async def get(self, key: str, *, scope: str | None = None, context: ExecutionContext | None = None) -> Any:
        if scope:
            return await self.memory._view(scope, _scope_id(scope, context)).get(key)
        token = set_current_context(context)
        try:
            return await self.memory.get(key)
        finally:
            reset_current_context(token)

    async def set(self, key: str, data: Any, *, scope: str = "global", scope_id: str | None = None) -> None:
        await self.memory._view(scope, scope_id or _scope_id(scope, None)).set(key, data)

    async def delete(self, key: str, *, scope: str = "global") -> None:
        await self.memory._view(scope, _scope_id(scope, None)).delete(key)

    async def list_keys(self, scope: str, scope_id: str) -> list[str]:
        return await self.memory._view(scope, scope_id).list_keys()


def _scope_id(scope: str, context: ExecutionContext | None) -> str:
    return "global" if scope == "global" else getattr(context, f"{scope}_id", None) or scope
