"""ExecutionContextMiddleware (inbound) and context propagation (outbound)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from asgiref.testing import ApplicationCommunicator
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket

from agentfield_asgi import (
    ContextPropagatingTransport,
    ExecutionContext,
    ExecutionContextMiddleware,
    current_context,
    inject_context,
)
from agentfield_asgi.context import reset_current_context, set_current_context
from agentfield_asgi.middleware import SCOPE_NEW_WORKFLOW_KEY

release_stream = asyncio.Event()


async def whoami(request: Request) -> JSONResponse:
    for _ in range(3):
        await asyncio.sleep(0)  # let concurrent requests interleave
    ctx = current_context()
    assert ctx is not None
    return JSONResponse({**ctx.as_dict(), "new": request.scope[SCOPE_NEW_WORKFLOW_KEY]})


async def stream(request: Request) -> StreamingResponse:
    async def body():
        yield f"first {current_context().workflow_id}\n".encode()
        await release_stream.wait()
        yield f"second {current_context().workflow_id}\n".encode()

    return StreamingResponse(body(), media_type="text/plain")


async def ws_endpoint(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_json(current_context().as_dict())
    await websocket.close()


def make_app(**options: str) -> Starlette:
    app = Starlette(
        routes=[
            Route("/whoami", whoami),
            Route("/stream", stream),
            WebSocketRoute("/ws", ws_endpoint),
        ]
    )
    app.add_middleware(ExecutionContextMiddleware, **options)
    return app


async def get_ctx(app: Starlette, headers: dict[str, str] | None = None) -> dict:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
        response = await client.get("/whoami", headers=headers)
    assert response.status_code == 200
    return response.json()


async def test_headers_become_the_context() -> None:
    headers = {
        "X-Workflow-ID": "wf-abc",
        "X-Session-ID": "user-1",
        "X-Actor-ID": "actor-9",
        "X-Execution-ID": "exec-1",
        "X-Parent-Execution-ID": "exec-0",
        "X-Agent-Node-ID": "caller",
    }
    ctx = await get_ctx(make_app(), headers)
    assert ctx["workflow_id"] == "wf-abc"
    assert ctx["session_id"] == "user-1"
    assert ctx["actor_id"] == "actor-9"
    assert ctx["execution_id"] == "exec-1"
    assert ctx["parent_execution_id"] == "exec-0"
    assert ctx["agent_node_id"] == "caller"
    assert ctx["new"] is False


async def test_run_id_alone_is_the_workflow() -> None:
    ctx = await get_ctx(make_app(), {"X-Run-ID": "run-7"})
    assert ctx["workflow_id"] == "run-7"
    assert ctx["new"] is False
    assert ctx["execution_id"]  # one is assigned when none arrives


async def test_no_workflow_starts_a_new_one_keeping_session_and_actor() -> None:
    app = make_app()
    first = await get_ctx(app, {"X-Session-ID": "user-1", "X-Actor-ID": "a"})
    second = await get_ctx(app)
    assert first["new"] is True and second["new"] is True
    assert first["workflow_id"].startswith("wf-") and second["workflow_id"].startswith("wf-")
    assert first["workflow_id"] != second["workflow_id"]
    assert first["root_workflow_id"] == first["workflow_id"]
    assert first["parent_execution_id"] is None
    assert (first["session_id"], first["actor_id"]) == ("user-1", "a")
    assert second["session_id"] is None


async def test_node_id_names_the_serving_node() -> None:
    ctx = await get_ctx(make_app(node_id="support-agent"), {"X-Agent-Node-ID": "caller"})
    assert ctx["agent_node_id"] == "support-agent"


async def test_context_is_reset_after_the_request() -> None:
    # ASGITransport runs the app in this very task: a leaked context would show here.
    assert current_context() is None
    await get_ctx(make_app(), {"X-Workflow-ID": "wf-leak"})
    assert current_context() is None
    outer = ExecutionContext(workflow_id="wf-outer")
    token = set_current_context(outer)
    try:
        inner = await get_ctx(make_app(), {"X-Workflow-ID": "wf-inner"})
        assert inner["workflow_id"] == "wf-inner"
        assert current_context() is outer
    finally:
        reset_current_context(token)


async def test_concurrent_requests_never_share_a_context() -> None:
    app = make_app()
    ids = [f"wf-{i:04d}" for i in range(50)]
    results = await asyncio.gather(*(get_ctx(app, {"X-Workflow-ID": wf}) for wf in ids))
    assert [r["workflow_id"] for r in results] == ids


async def test_streaming_body_is_not_buffered_and_sees_the_context() -> None:
    release_stream.clear()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/stream",
        "raw_path": b"/stream",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"x-workflow-id", b"wf-stream")],
        "client": ("127.0.0.1", 1),
        "server": ("node", 80),
    }
    comm = ApplicationCommunicator(make_app(), scope)
    await comm.send_input({"type": "http.request", "body": b"", "more_body": False})
    start = await comm.receive_output(timeout=30)
    assert start["type"] == "http.response.start" and start["status"] == 200
    # The first chunk arrives while the generator is still blocked before the second.
    first = await comm.receive_output(timeout=30)
    assert first["body"] == b"first wf-stream\n"
    assert first.get("more_body") is True
    release_stream.set()
    second = await comm.receive_output(timeout=30)
    assert second["body"] == b"second wf-stream\n"
    await comm.wait(timeout=30)


async def ws_context(app: Starlette, headers: list[tuple[bytes, bytes]]) -> dict:
    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "ws",
        "path": "/ws",
        "raw_path": b"/ws",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("node", 80),
        "subprotocols": [],
    }
    comm = ApplicationCommunicator(app, scope)
    await comm.send_input({"type": "websocket.connect"})
    assert (await comm.receive_output(timeout=30))["type"] == "websocket.accept"
    frame = await comm.receive_output(timeout=30)
    assert (await comm.receive_output(timeout=30))["type"] == "websocket.close"
    await comm.wait(timeout=30)
    return json.loads(frame["text"])


async def test_websocket_gets_the_context() -> None:
    app = make_app(node_id="ws-node")
    ctx = await ws_context(app, [(b"x-workflow-id", b"wf-ws"), (b"x-session-id", b"s")])
    assert (ctx["workflow_id"], ctx["session_id"], ctx["agent_node_id"]) == (
        "wf-ws",
        "s",
        "ws-node",
    )
    fresh = await ws_context(app, [])
    assert fresh["workflow_id"].startswith("wf-")
    assert current_context() is None


async def test_lifespan_passes_through() -> None:
    events: list[str] = []

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        events.append("start")
        yield
        events.append("stop")

    app = Starlette(routes=[Route("/whoami", whoami)], lifespan=lifespan)
    app.add_middleware(ExecutionContextMiddleware)
    comm = ApplicationCommunicator(app, {"type": "lifespan", "asgi": {"version": "3.0"}})
    await comm.send_input({"type": "lifespan.startup"})
    assert (await comm.receive_output(timeout=30))["type"] == "lifespan.startup.complete"
    await comm.send_input({"type": "lifespan.shutdown"})
    assert (await comm.receive_output(timeout=30))["type"] == "lifespan.shutdown.complete"
    assert events == ["start", "stop"]


# ---------------------------------------------------------------- outbound


def echo_headers(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={k.lower(): v for k, v in request.headers.items()})


@pytest.mark.parametrize("style", ["event_hook", "transport"])
async def test_outbound_requests_carry_the_current_context(style: str) -> None:
    mock = httpx.MockTransport(echo_headers)
    if style == "event_hook":
        client = inject_context(httpx.AsyncClient(transport=mock, base_url="http://other"))
    else:
        client = httpx.AsyncClient(
            transport=ContextPropagatingTransport(mock), base_url="http://other"
        )
    async with client:
        outside = (await client.get("/")).json()
        assert "x-workflow-id" not in outside
        token = set_current_context(
            ExecutionContext(workflow_id="wf-out", session_id="s-1", execution_id="exec-5")
        )
        try:
            inside = (await client.get("/")).json()
            explicit = (await client.get("/", headers={"X-Session-ID": "mine"})).json()
        finally:
            reset_current_context(token)
    assert inside["x-workflow-id"] == "wf-out"
    assert inside["x-session-id"] == "s-1"
    assert inside["x-execution-id"] == "exec-5"
    assert explicit["x-session-id"] == "mine"  # a header the caller set wins
    assert explicit["x-workflow-id"] == "wf-out"


async def test_inject_context_is_idempotent() -> None:
    client = httpx.AsyncClient(transport=httpx.MockTransport(echo_headers))
    inject_context(inject_context(client))
    assert len(client.event_hooks["request"]) == 1
    await client.aclose()


def test_json_roundtrip_helper_is_plain() -> None:
    # as_dict is what reasoners and tests serialise; it must be JSON-ready.
    assert json.loads(json.dumps(ExecutionContext.new_root().as_dict()))["workflow_id"].startswith(
        "wf-"
    )


# ---------------------------------------------------------------- workflow end hook


async def boom(request: Request) -> JSONResponse:
    raise RuntimeError("boom")


async def server_error(request: Request) -> JSONResponse:
    return JSONResponse({"error": "x"}, status_code=503)


def hooked_app(ended: list[tuple[str, bool]]) -> Starlette:
    async def on_end(ctx: ExecutionContext, failed: bool) -> None:
        ended.append((ctx.workflow_id, failed))

    app = Starlette(
        routes=[Route("/whoami", whoami), Route("/boom", boom), Route("/503", server_error)]
    )
    app.add_middleware(ExecutionContextMiddleware, on_workflow_end=on_end)
    return app


async def test_workflow_end_hook_runs_only_for_workflows_the_request_started() -> None:
    ended: list[tuple[str, bool]] = []
    app = hooked_app(ended)
    started = await get_ctx(app)
    assert ended == [(started["workflow_id"], False)]
    await get_ctx(app, {"X-Workflow-ID": "wf-from-caller"})
    assert len(ended) == 1  # the caller owns that workflow


async def test_workflow_end_hook_reports_failures() -> None:
    ended: list[tuple[str, bool]] = []
    transport = httpx.ASGITransport(app=hooked_app(ended), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
        assert (await client.get("/boom")).status_code == 500
        assert (await client.get("/503")).status_code == 503
    assert [failed for _, failed in ended] == [True, True]
    assert ended[0][0] != ended[1][0]


async def test_nested_middleware_keeps_the_outer_context() -> None:
    ended: list[tuple[str, bool]] = []

    async def on_end(ctx: ExecutionContext, failed: bool) -> None:
        ended.append((ctx.workflow_id, failed))

    inner = ExecutionContextMiddleware(make_app(), node_id="inner-node", on_workflow_end=on_end)
    outer = Starlette(routes=[Mount("/agent", app=inner)])
    outer.add_middleware(ExecutionContextMiddleware, node_id="host", on_workflow_end=on_end)
    transport = httpx.ASGITransport(app=outer)
    async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
        ctx = (await client.get("/agent/whoami")).json()
    assert ctx["agent_node_id"] == "inner-node"
    assert ctx["new"] is False  # the outer middleware started (and ends) the workflow
    assert ended == [(ctx["workflow_id"], False)]
