"""specialist-agent for the end-to-end tests (served by uvicorn in its own process)."""

from __future__ import annotations

import asyncio

from agentfield_asgi import Agent, current_context

app = Agent("specialist-agent")


@app.reasoner
async def handle_billing(ticket_id: str | None = None) -> dict:
    ctx = current_context()
    assert ctx is not None
    return {
        "ticket_id": ticket_id,
        "ticket_priority": await app.memory.get("ticket_priority"),
        "ticket_category": await app.memory.get("ticket_category"),
        "customer_tier": await app.memory.get("customer_tier"),
        "agent_style": await app.memory.get("agent_style"),
        "workflow_id": ctx.workflow_id,
        "execution_id": ctx.execution_id,
        "parent_execution_id": ctx.parent_execution_id,
        "session_id": ctx.session_id,
    }


@app.reasoner
async def echo_token() -> object:
    for _ in range(5):
        await asyncio.sleep(0.01)  # let concurrent workflows interleave
    return await app.memory.get("token")


@app.reasoner
async def fail(reason: str) -> None:
    raise RuntimeError(reason)
