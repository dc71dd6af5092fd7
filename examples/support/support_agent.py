"""support-agent: triages a ticket, keeps what it learned in workflow memory, and hands
billing questions to the specialist. Serve with uvicorn (see examples/README.md)."""

from __future__ import annotations

from agentfield_asgi import Agent, current_context

app = Agent("support-agent")  # control plane and public URL from AGENTFIELD_* variables


def triage(text: str) -> tuple[str, str]:
    """A deterministic stand-in for a classifier: (priority, category)."""
    lowered = text.lower()
    category = (
        "billing" if any(w in lowered for w in ("invoice", "charge", "refund")) else "general"
    )
    priority = "high" if any(w in lowered for w in ("twice", "urgent", "blocked")) else "normal"
    return priority, category


@app.reasoner
async def handle_ticket(ticket_id: str, text: str) -> dict:
    priority, category = triage(text)
    # Unscoped writes go to the current workflow: every node called from here sees them.
    await app.memory.set("ticket_priority", priority)
    await app.memory.set("ticket_category", category)
    # The customer's session outlives this workflow.
    history = await app.memory.session().get("tickets", default=[])
    await app.memory.session().set("tickets", [*history, ticket_id])

    answer = None
    if category == "billing":
        answer = await app.call("specialist-agent.handle_billing", ticket_id=ticket_id)
    ctx = current_context()
    return {
        "ticket_id": ticket_id,
        "priority": priority,
        "category": category,
        "workflow_id": ctx.workflow_id if ctx else None,
        "specialist": answer,
    }
