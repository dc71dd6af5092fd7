"""support-agent for the end-to-end tests (served by uvicorn in its own process)."""

from __future__ import annotations

from agentfield_asgi import Agent, ExecutionError, current_context

app = Agent("support-agent")


@app.reasoner
async def handle_ticket(ticket_id: str, priority: str, category: str) -> dict:
    await app.memory.set("ticket_priority", priority)  # unscoped: the workflow
    await app.memory.set("ticket_category", category)
    await app.memory.session().set("customer_tier", "gold")  # the caller's session
    await app.memory.actor().set("agent_style", "formal")  # this node's own actor memory
    specialist = await app.call("specialist-agent.handle_billing", ticket_id=ticket_id)
    ctx = current_context()
    assert ctx is not None
    return {
        "specialist": specialist,
        "workflow_id": ctx.workflow_id,
        "execution_id": ctx.execution_id,
        "own_style": await app.memory.get("agent_style"),
        "priority_after_call": await app.memory.get("ticket_priority"),
    }


@app.reasoner
async def relay_token(token: str) -> dict:
    await app.memory.set("token", token)
    seen = await app.call("specialist-agent.echo_token")
    return {"mine": await app.memory.get("token"), "specialist_saw": seen}


@app.reasoner
async def escalate(reason: str) -> dict:
    try:
        await app.call("specialist-agent.fail", reason=reason)
    except ExecutionError as exc:
        return {"type": type(exc).__name__, "message": exc.message, "status": exc.status}
    return {"type": None}


@app.reasoner
async def call_unknown(target: str) -> dict:
    try:
        await app.call(target)
    except ExecutionError as exc:
        return {"status": exc.status, "code": exc.code, "message": exc.message}
    return {"status": None}
