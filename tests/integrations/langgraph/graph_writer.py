"""A compiled LangGraph ``StateGraph`` with ``store=AgentFieldStore(...)``, run as its own
process: ``python graph_writer.py CONTROL_PLANE_URL USER``. Its first node remembers a
profile in the store; its second asks our agent node (through the control plane) what
it reads; the final state is printed as JSON."""

from __future__ import annotations

import json
import sys
from typing import TypedDict

import httpx
from langgraph.graph import END, START, StateGraph
from langgraph.store.base import BaseStore

from agentfield_asgi.langgraph import AgentFieldStore


class State(TypedDict, total=False):
    user: str
    likes: str
    agent_saw: object


def remember(state: State, *, store: BaseStore) -> State:
    store.put(("users", state["user"]), "profile", {"likes": state["likes"]})
    item = store.get(("users", state["user"]), "profile")
    assert item is not None
    return {}


def ask_agent(state: State) -> State:
    reply = httpx.post(
        f"{URL}/api/v1/execute/profile-reader.read_profile",
        json={"input": {"user": state["user"]}},
        timeout=60,
    )
    reply.raise_for_status()
    return {"agent_saw": reply.json()["result"]}


URL = sys.argv[1]

if __name__ == "__main__":
    builder = StateGraph(State)
    builder.add_node("remember", remember)
    builder.add_node("ask_agent", ask_agent)
    builder.add_edge(START, "remember")
    builder.add_edge("remember", "ask_agent")
    builder.add_edge("ask_agent", END)
    with AgentFieldStore(URL) as store:
        graph = builder.compile(store=store)
        final = graph.invoke({"user": sys.argv[2], "likes": "short answers"})
    print(json.dumps(final))
