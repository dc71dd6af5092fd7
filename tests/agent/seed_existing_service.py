"""An existing Starlette service that becomes an agent node: the middleware on the host,
an Agent mounted at /agent, and a plain route that uses memory and calls another node."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from agentfield_asgi import Agent, ExecutionContextMiddleware, current_context

agent = Agent("orders-service")  # AGENTFIELD_PUBLIC_URL ends in /agent


@agent.reasoner
async def order_priority() -> object:
    return await agent.memory.get("ticket_priority")


async def checkout(request: Request) -> JSONResponse:
    await agent.memory.set("ticket_priority", "urgent")
    await agent.memory.set("ticket_category", "orders")
    specialist = await agent.call("specialist-agent.handle_billing", ticket_id="O-1")
    own = await agent.call("orders-service.order_priority")  # back in through the control plane
    ctx = current_context()
    assert ctx is not None
    return JSONResponse({"specialist": specialist, "own": own, "workflow_id": ctx.workflow_id})


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    async with agent.lifespan(app):
        yield


app = Starlette(
    routes=[Route("/checkout", checkout, methods=["POST"]), Mount("/agent", app=agent)],
    lifespan=lifespan,
)
app.add_middleware(
    ExecutionContextMiddleware, node_id=agent.node_id, on_workflow_end=agent.complete_workflow
)
