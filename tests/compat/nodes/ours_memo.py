"""memo-agent written with our ``Agent``: the same ``remember`` reasoner as the SDK's
support-agent, to compare concurrent executions on one node."""

from __future__ import annotations

import asyncio

from agentfield_asgi import Agent

app = Agent("memo-agent")


@app.reasoner
async def remember(token: str, pause: float = 0.0) -> dict:
    await app.memory.set("token", token)
    await asyncio.sleep(pause)
    return {"mine": await app.memory.get("token")}
