"""support-agent written with the public ``agentfield`` SDK, unchanged, as AgentField
documents the support -> specialist example. Run as a script: it serves itself
(``Agent.serve``) on ``PORT`` and registers with ``AGENTFIELD_SERVER``."""

from __future__ import annotations

import asyncio
import os

from agentfield import Agent
from agentfield.execution_context import get_current_context

PORT = int(os.environ.get("PORT", "8001"))
app = Agent(
    node_id="support-agent",
    agentfield_server=os.environ["AGENTFIELD_SERVER"],
    callback_url=f"http://127.0.0.1:{PORT}",
)


@app.reasoner()
async def handle_ticket(ticket_id: str, priority: str, category: str) -> dict:
    await app.memory.set("ticket_priority", priority)  # the workflow of this run
    await app.memory.set("ticket_category", category)
    specialist = await app.call("specialist-agent.handle_billing", ticket_id=ticket_id)
    ctx = get_current_context()
    return {
        "specialist": specialist,
        "workflow_id": ctx.workflow_id if ctx else None,
        "priority_after_call": await app.memory.get("ticket_priority"),
    }


@app.reasoner()
async def relay_token(token: str) -> dict:
    await app.memory.set("token", token)
    seen = await app.call("specialist-agent.echo_token")
    return {"mine": await app.memory.get("token"), "specialist_saw": seen}


@app.reasoner()
async def remember(token: str, pause: float = 0.0) -> dict:
    """Write, wait, read back: two at once on this one node show the SDK's shared context."""
    await app.memory.set("token", token)
    await asyncio.sleep(pause)
    return {"mine": await app.memory.get("token")}


@app.reasoner()
async def escalate(reason: str) -> dict:
    try:
        await app.call("specialist-agent.fail", reason=reason)
    except Exception as exc:  # what an SDK node sees when its callee fails
        return {"type": type(exc).__name__, "message": str(exc)}
    return {"type": None}


@app.skill()
def shout(text: str) -> dict:
    return {"text": text.upper()}


if __name__ == "__main__":
    app.serve(port=PORT, host="127.0.0.1", log_level="warning", access_log=False)
