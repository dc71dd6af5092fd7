"""specialist-agent: answers billing tickets using what support-agent stored in the
shared workflow memory; no ids are passed by hand."""

from __future__ import annotations

from agentfield_asgi import Agent

app = Agent("specialist-agent")


@app.reasoner
async def handle_billing(ticket_id: str) -> dict:
    priority = await app.memory.get("ticket_priority")  # set by support-agent, same workflow
    category = await app.memory.get("ticket_category")
    earlier = await app.memory.session().get("tickets", default=[])
    action = "refund issued today" if priority == "high" else "refund queued"
    return {
        "ticket_id": ticket_id,
        "saw_priority": priority,
        "saw_category": category,
        "customer_ticket_count": len(earlier),
        "action": action,
    }
