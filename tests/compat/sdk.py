"""The AgentField SDK's memory objects wired to a live server, as an agent would hold them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from agentfield_asgi.testing import ServerProcess

try:  # a test dependency ([test] extra); missing is a failure, never a skip
    from agentfield.client import AgentFieldClient
    from agentfield.exceptions import MemoryAccessError
    from agentfield.execution_context import ExecutionContext as SDKContext
    from agentfield.memory import MemoryClient, MemoryInterface
    from agentfield.memory_events import MemoryEventClient
except ImportError as exc:  # pragma: no cover - environment problem
    pytest.fail(f"the AgentField SDK is needed: pip install -e '.[test]' ({exc})", pytrace=False)

RUN = "run-compat-1"
SESSION = "user_123"
ACTOR = "bot-7"
NODE = "triage-agent"


@dataclass
class SDK:
    server: ServerProcess
    client: AgentFieldClient
    memory: MemoryClient
    app_memory: MemoryInterface  # what an agent sees as ``app.memory``

    async def raw_get(self, key: str, scope: str, **headers: str) -> httpx.Response:
        """Our own API, to check where the SDK's writes landed."""
        async with httpx.AsyncClient(base_url=self.server.url) as http:
            return await http.post(
                "/api/v1/memory/get", json={"key": key, "scope": scope}, headers=headers
            )


def sdk_context(**ids: Any) -> SDKContext:
    """An execution context as the SDK builds one inside a reasoner."""
    values: dict[str, Any] = {
        "run_id": RUN,
        "execution_id": "exec-1",
        "agent_instance": None,
        "reasoner_name": "triage",
        "agent_node_id": NODE,
    }
    values.update(ids)
    return SDKContext(**values)


def connect(server: ServerProcess, api_key: str | None = None, **ids: Any) -> SDK:
    """The SDK's client, memory client and ``app.memory`` interface for ``server``."""
    client = AgentFieldClient(base_url=server.url, api_key=api_key)
    ctx = sdk_context(**ids)
    memory = MemoryClient(client, ctx, agent_node_id=NODE)
    events = MemoryEventClient(server.url, ctx, api_key)
    return SDK(server, client, memory, MemoryInterface(memory, events))


async def disconnect(sdk: SDK) -> None:
    await sdk.app_memory.events.close()
    await sdk.client.aclose()


__all__ = ["ACTOR", "NODE", "RUN", "SDK", "SESSION", "MemoryAccessError", "connect", "disconnect"]
