"""specialist-agent written with the public ``agentfield`` SDK, unchanged (see
``sdk_support.py``)."""

from __future__ import annotations

import asyncio
import os

from agentfield import Agent
from agentfield.execution_context import get_current_context

PORT = int(os.environ.get("PORT", "8002"))
app = Agent(
    node_id="specialist-agent",
    agentfield_server=os.environ["AGENTFIELD_SERVER"],
    callback_url=f"http://127.0.0.1:{PORT}",
)


@app.reasoner()
async def handle_billing(ticket_id: str | None = None) -> dict:
    ctx = get_current_context()
    return {
        "ticket_id": ticket_id,
        "ticket_priority": await app.memory.get("ticket_priority"),
        "ticket_category": await app.memory.get("ticket_category"),
        "customer_tier": await app.memory.get("customer_tier"),
        "workflow_id": ctx.workflow_id if ctx else None,
        "execution_id": ctx.execution_id if ctx else None,
        "parent_execution_id": ctx.parent_execution_id if ctx else None,
        "session_id": ctx.session_id if ctx else None,
    }


@app.reasoner()
async def echo_token() -> object:
    return await app.memory.get("token")


@app.reasoner()
async def slow(seconds: float) -> dict:
    await asyncio.sleep(seconds)
    return {"slept": seconds}


@app.reasoner()
async def fail(reason: str) -> None:
    raise RuntimeError(reason)


if __name__ == "__main__":
    app.serve(port=PORT, host="127.0.0.1", log_level="warning", access_log=False)
