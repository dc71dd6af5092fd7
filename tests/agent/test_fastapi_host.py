"""An existing FastAPI service adds the middleware and an Agent, and calls a node."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from agentfield_asgi import Agent, ExecutionContextMiddleware, current_context


async def test_fastapi_route_shares_workflow_memory_with_a_node(database_url: str) -> None:
    # The agent hosts the control plane here, so the test needs no other process.
    agent = Agent("shop", serve_control_plane=True, database_url=database_url)

    @agent.reasoner
    async def price_check() -> dict:
        return {
            "basket": await agent.memory.get("basket"),
            "workflow_id": current_context().workflow_id,
        }

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with agent.lifespan(app):
            yield

    api = FastAPI(lifespan=lifespan)

    @api.post("/checkout")
    async def checkout(items: list[str]) -> dict:
        await agent.memory.set("basket", items)
        answer = await agent.call("shop.price_check")
        return {"answer": answer, "workflow_id": current_context().workflow_id}

    api.mount("/agent", agent)
    api.add_middleware(
        ExecutionContextMiddleware, node_id="shop", on_workflow_end=agent.complete_workflow
    )

    async with agent.lifespan(api):
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
            reply = await client.post("/checkout", json=["tea", "cups"])
            assert reply.status_code == 200, reply.text
            body = reply.json()
            assert body["answer"] == {"basket": ["tea", "cups"], "workflow_id": body["workflow_id"]}
            # ASGITransport returns once the app returned, i.e. after the end hook ran.
            workflow = (await client.get(f"/agent/api/v1/workflows/{body['workflow_id']}")).json()
            assert workflow["status"] == "succeeded"
            assert await agent.memory.workflow(body["workflow_id"]).list_keys() == []
