"""OpenTelemetry across a two-node workflow: the control plane and two agent nodes, each a
uvicorn server on loopback in its own thread (its own event loop: nothing but the
``traceparent`` header carries the trace between them), spans captured by an in-memory
exporter. The whole workflow is one trace."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentfield_asgi import Agent, create_memory_app
from agentfield_asgi.testing import free_port
from agentfield_asgi.testing.waits import wait_until

EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def provider() -> None:
    # The global provider can be set once per process; this module owns it.
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
    trace.set_tracer_provider(tracer_provider)


class ThreadServer:
    """uvicorn serving ``app`` on a loopback port in a thread of its own."""

    def __init__(self, app: object, port: int | None = None) -> None:
        self.port = port or free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        for _ in range(600):
            if self.server.started:
                return self
            threading.Event().wait(0.05)
        raise RuntimeError("server did not start")

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def nodes(cp_url: str, ports: tuple[int, int]) -> tuple[Agent, Agent]:
    support = Agent(
        "support-agent", control_plane_url=cp_url, public_url=f"http://127.0.0.1:{ports[0]}"
    )
    specialist = Agent(
        "specialist-agent", control_plane_url=cp_url, public_url=f"http://127.0.0.1:{ports[1]}"
    )

    @support.reasoner
    async def handle(ticket: str) -> dict[str, object]:
        await support.memory.set("ticket", ticket)
        answer = await support.call("specialist-agent.answer", ticket=ticket)
        return {"answer": answer}

    @specialist.reasoner
    async def answer(ticket: str) -> str:
        return f"{await specialist.memory.get('ticket')} answered"

    return support, specialist


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[str]:
    memory = create_memory_app(f"sqlite:///{tmp_path / 'cp.db'}", sqlite_writer="thread")
    with ThreadServer(memory.app) as cp:
        ports = (free_port(), free_port())
        support, specialist = nodes(cp.url, ports)
        with ThreadServer(support, ports[0]), ThreadServer(specialist, ports[1]):
            yield cp.url


async def test_one_workflow_is_one_trace_across_nodes(
    cluster: str,
) -> None:
    cp_url = cluster

    async def registered() -> bool:
        async with httpx.AsyncClient(base_url=cp_url) as client:
            ids = {n["id"] for n in (await client.get("/api/v1/nodes")).json()["nodes"]}
        return {"support-agent", "specialist-agent"} <= ids

    await wait_until(registered, "the nodes did not register")
    EXPORTER.clear()
    async with httpx.AsyncClient(base_url=cp_url, timeout=60) as client:
        reply = await client.post(
            "/api/v1/execute/support-agent.handle",
            json={"input": {"ticket": "T-1"}},
            headers={"X-Session-ID": "conv-1"},
        )
    assert reply.status_code == 200, reply.text
    assert reply.json()["result"] == {"answer": "T-1 answered"}
    workflow_id = reply.json()["workflow_id"]

    def spans() -> list[ReadableSpan]:
        return list(EXPORTER.get_finished_spans())

    def names() -> set[str]:
        return {s.name for s in spans()}

    await wait_until(lambda: "POST /api/v1/execute/support-agent.handle" in names(), "no root span")
    # Event delivery runs outside any request: its spans are traces of their own.
    finished = [s for s in spans() if s.name != "deliver memory events"]
    by_name = {s.name: s for s in finished}
    # The control plane's request, both executions, both reasoners, the memory operations.
    assert {
        "invoke_agent support-agent",
        "invoke_agent specialist-agent",
        "POST /reasoners/handle",
        "POST /reasoners/answer",
        "update_memory /api/v1/memory/set",
        "search_memory /api/v1/memory/get",
        "POST /api/v1/execute/specialist-agent.answer",
    } <= set(by_name), sorted(by_name)
    trace_ids = {s.context.trace_id for s in finished}
    assert len(trace_ids) == 1, sorted((s.name, hex(s.context.trace_id)) for s in finished)

    # Parent links follow the calls: control plane -> support node -> control plane ->
    # specialist node -> control plane (its memory read).
    def parent_of(name: str) -> str:
        parent = by_name[name].parent
        assert parent is not None, name
        return next(s.name for s in finished if s.context.span_id == parent.span_id)

    assert parent_of("invoke_agent support-agent") == "POST /api/v1/execute/support-agent.handle"
    assert parent_of("POST /reasoners/handle") == "invoke_agent support-agent"
    assert parent_of("POST /api/v1/execute/specialist-agent.answer") == "POST /reasoners/handle"
    assert parent_of("POST /reasoners/answer") == "invoke_agent specialist-agent"
    assert parent_of("search_memory /api/v1/memory/get") == "POST /reasoners/answer"

    # GenAI semantic-convention attributes where they apply.
    invoke = by_name["invoke_agent specialist-agent"].attributes or {}
    assert invoke["gen_ai.operation.name"] == "invoke_agent"
    assert invoke["gen_ai.agent.name"] == "specialist-agent"
    assert invoke["agentfield.workflow.id"] == workflow_id
    read = by_name["search_memory /api/v1/memory/get"].attributes or {}
    assert read["gen_ai.operation.name"] == "search_memory"
    assert read["gen_ai.agent.name"] == "specialist-agent"
    assert read["gen_ai.conversation.id"] == "conv-1"
    write = by_name["update_memory /api/v1/memory/set"].attributes or {}
    assert write["gen_ai.operation.name"] == "update_memory"
    assert write["agentfield.workflow.id"] == workflow_id
    # The control plane delivered the workflow's change events (a span of its own).
    await wait_until(
        lambda: any(
            s.name == "deliver memory events"
            and (s.attributes or {}).get("agentfield.events.count", 0) >= 1
            for s in spans()
        ),
        "no event delivery span",
    )
    # No stored value in any attribute.
    assert all("T-1" not in str(v) for s in finished for v in (s.attributes or {}).values())


async def test_without_opentelemetry_nothing_is_traced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The package without the [otel] extra: no middleware, no headers, no spans."""
    from agentfield_asgi import tracing

    monkeypatch.setattr(tracing, "trace", None)
    monkeypatch.setattr(tracing, "propagate", None)
    assert not tracing.enabled() and tracing.inject({}) == {}
    memory = create_memory_app(f"sqlite:///{tmp_path / 'm.db'}")
    assert not isinstance(memory.app, tracing.TracingMiddleware)
    EXPORTER.clear()
    transport = httpx.ASGITransport(app=memory.app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://m") as client:
            reply = await client.post("/api/v1/memory/set", json={"key": "k", "data": 1})
            assert reply.status_code == 200
    finally:
        await memory.stop()
    assert EXPORTER.get_finished_spans() == ()
