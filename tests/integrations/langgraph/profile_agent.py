"""An agent node of ours (served by uvicorn in its own process) that reads what a
LangGraph graph remembered, through its ordinary memory client."""

from __future__ import annotations

from typing import Any

from agentfield_asgi import Agent

app = Agent("profile-reader")


@app.reasoner
async def read_profile(user: str) -> Any:
    # The LangGraph item (("users", user), "profile") is this global key.
    return await app.memory.global_scope.get(f"users/{user}/profile")
