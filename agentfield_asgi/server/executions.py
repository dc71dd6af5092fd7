"""Execution gateway in AgentField's shapes: every execution is a record in the store.

* ``POST /execute/{node}.{name}``: run a reasoner or skill and answer with its result.
* ``POST /execute/async/{node}.{name}``: answer 202 at once (``execution_id``, ``run_id``,
  ``workflow_id``, ``status``); the execution goes on in the background.
* ``GET /executions/{id}``: status (AgentField's words), result, error, timings.
* ``POST /executions/{id}/status``: a node that answered 202 (the public SDK does when the
  request carries ``X-Execution-ID``) posts its outcome here later.

The record, not a task, is the truth: a waiter polls the store (woken early by a status
posted to this instance), so a status posted to another instance on the same database, or
after a restart, is seen. Each record carries its deadline (``execute_timeout_seconds``
after it started): a running execution past it is failed with the reason when read, so a
node that never reports cannot make anyone wait longer.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .. import tracing
from ..client.transports import Reply, shared_http_transport
from ..codec import format_ts, now_us
from ..context import ExecutionContext
from ..errors import (
    INVALID_INPUT,
    INVALID_TARGET,
    BadRequest,
    ExecutionError,
    ExecutionFinished,
    ExecutionNotFound,
    NodeUnreachable,
    ReasonerNotFound,
)
from . import access
from .execution_records import (
    TERMINAL,
    callee_context,
    forward_headers,
    normalize_status,
    render,
    start_record,
)
from .http import json_response, read_json_object, request_context
from .nodes import NodeRegistry, component_names
from .openapi_control import EXECUTION_PATHS
from .workflows import control_plane

if TYPE_CHECKING:
    from .app import MemoryService

log = logging.getLogger("agentfield_asgi.executions")

POLL_START_SECONDS = 0.05
POLL_MAX_SECONDS = 0.5


@dataclass(frozen=True, slots=True)
class Started:
    """An execution recorded as running, with what its forward needs."""

    record: dict[str, Any]
    node: dict[str, Any]
    kwargs: dict[str, Any]
    unwrapped: tuple[str, ...] = ()
    """The body's top-level fields when it has no ``input`` wrapper (for the hint)."""


class Gateway:
    """Starts, forwards, tracks and finishes executions for one service."""

    def __init__(self, service: MemoryService) -> None:
        self.service = service
        self.registry = NodeRegistry(service)
        self.plane = control_plane(service)
        self._wakeups: dict[str, asyncio.Event] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        service.on_stop(self._stop)

    # ------------------------------------------------------------ start
    async def start(
        self, target: str, payload: dict[str, Any], caller: ExecutionContext, explicit_wf: bool
    ) -> Started:
        """Validate, record the execution as running."""
        node_id, _, name = target.rpartition(".")
        if not node_id or not name:
            raise BadRequest(
                "target must be '<node_id>.<reasoner>'",
                code=INVALID_TARGET,
                details={"target": target},
            )
        kwargs = payload.get("input", {})
        if kwargs is None:
            kwargs = {}
        if not isinstance(kwargs, dict):
            raise BadRequest("'input' must be an object of keyword arguments", code=INVALID_INPUT)
        node = await self.registry.stored(node_id)
        kind = _kind(node, name)
        store = await self.service.ready()
        wf = caller.workflow_id
        known = wf is not None and await store.get_workflow(wf) is not None
        ctx, is_root = callee_context(caller, explicit_wf, known)
        deadline = self.service.settings.execute_timeout_seconds
        record = start_record(ctx, node_id, name, kind, caller, is_root, deadline)
        await self.plane.begin(record, is_root)
        unwrapped = () if "input" in payload else tuple(payload)
        return Started(record, node, kwargs, unwrapped)

    # ------------------------------------------------------------ run
    async def run(self, started: Started) -> dict[str, Any]:
        """Forward to the node and wait for the outcome; the final record (never raises
        for the callee's failures: they are the record's ``failed`` status)."""
        record = started.record
        remaining = (record["deadline_us"] - now_us()) / 1_000_000
        try:
            reply = await self._forward(started, remaining)
        except NodeUnreachable as exc:
            return await self.finish(
                record["execution_id"], "failed", error=exc.message, details=exc.details
            )
        if reply.status == 202:
            return await self.wait(record["execution_id"])
        if reply.ok:
            return await self.finish(record["execution_id"], "succeeded", result=reply.body)
        message, code, details = reply.error_fields()
        if code == "invalid_input":
            message = with_wrapper_hint(message, started.unwrapped)
        return await self.finish(
            record["execution_id"],
            "failed",
            error=message,
            details={
                "reason": "callee_error",
                "error_code": code,
                "error_details": details,
                "callee_status": reply.status,
            },
        )

    async def _forward(self, started: Started, seconds: float) -> Reply:
        node, record = started.node, started.record
        node_id = node["id"]
        transport = self.plane.local_nodes.get(node_id)
        if transport is None:
            if not node.get("base_url"):
                raise NodeUnreachable(
                    f"agent node {node_id!r} registered no public URL",
                    details={"node_id": node_id, "reason": "no_url"},
                )
            transport = shared_http_transport(node["base_url"])
        path = f"/{'skills' if record['type'] == 'skill' else 'reasoners'}/{record['reasoner']}"
        span = tracing.client_span(
            f"invoke_agent {node_id}",
            {
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": node_id,
                "agentfield.reasoner": record["reasoner"],
                "agentfield.workflow.id": record["workflow_id"] or "",
                "agentfield.execution.id": record["execution_id"] or "",
            },
        )
        with span:
            reply = await transport.request(
                "POST",
                path,
                json=started.kwargs,
                headers=tracing.inject(forward_headers(record)),
                timeout_seconds=max(seconds, 0.001),
            )
        body = reply.body
        if reply.status in (503, 504) and isinstance(body, dict):
            if body.get("code") in ("unreachable", "timeout"):
                raise NodeUnreachable(
                    f"agent node {node_id!r} is unreachable: {body['error']}",
                    details={"node_id": node_id, "reason": body["code"]},
                )
        return reply

    # ------------------------------------------------------------ outcome
    async def get(self, execution_id: str) -> dict[str, Any]:
        """The record; a running one past its deadline is failed first."""
        store = await self.service.ready()
        record = await store.get_execution(execution_id)
        if record is None:
            raise ExecutionNotFound(
                f"no execution {execution_id!r}", details={"execution_id": execution_id}
            )
        if record["status"] not in TERMINAL and now_us() > record.get("deadline_us", 2**62):
            return await self._expire(record)
        return record

    async def _expire(self, record: dict[str, Any]) -> dict[str, Any]:
        seconds = self.service.settings.execute_timeout_seconds
        return await self.finish(
            record["execution_id"],
            "failed",
            error=f"no outcome from {record['target']} within the deadline of {seconds:g}s",
            details={"reason": "deadline", "node_id": record["node_id"]},
        )

    async def wait(self, execution_id: str) -> dict[str, Any]:
        """Until the record is terminal or past its deadline (then failed)."""
        interval = POLL_START_SECONDS
        wakeup = self._wakeups.setdefault(execution_id, asyncio.Event())
        try:
            while True:
                record = await self.get(execution_id)
                if record["status"] in TERMINAL:
                    return record
                left = (record["deadline_us"] - now_us()) / 1_000_000
                try:
                    await asyncio.wait_for(wakeup.wait(), max(0.0, min(interval, left)))
                except TimeoutError:
                    pass
                wakeup.clear()
                interval = min(interval * 2, POLL_MAX_SECONDS)
        finally:
            self._wakeups.pop(execution_id, None)

    async def report(
        self, execution_id: str, payload: dict[str, Any], record: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """``POST /executions/{id}/status`` from the node (``record``: the execution when the
        caller has read it already)."""
        status = normalize_status(payload.get("status"))
        if record is None:
            record = await self.get(execution_id)
        if record["status"] in TERMINAL:
            raise ExecutionFinished(
                f"execution {execution_id!r} already ended as {record['status']!r}",
                details={"execution_id": execution_id, "status": record["status"]},
            )
        if status not in TERMINAL:
            record["status"] = status
            store = await self.service.ready()
            await store.put_execution(record)
            return record
        error = payload.get("error")
        details = payload.get("error_details")
        return await self.finish(
            execution_id,
            status,
            result=payload.get("result"),
            error=None if error is None else str(error),
            details=details if isinstance(details, dict) else None,
            duration_ms=payload.get("duration_ms"),
        )

    async def finish(
        self,
        execution_id: str,
        status: str,
        *,
        result: Any = None,
        error: str | None = None,
        details: dict[str, Any] | None = None,
        duration_ms: Any = None,
    ) -> dict[str, Any]:
        """Record the outcome once (a record already ended keeps its first outcome) and,
        for a workflow's root, complete the workflow."""
        store = await self.service.ready()
        record = await store.get_execution(execution_id)
        if record is None:
            raise ExecutionNotFound(f"no execution {execution_id!r}")
        if record["status"] in TERMINAL:
            return record
        finished = now_us()
        if not isinstance(duration_ms, int):
            duration_ms = (finished - record["started_us"]) // 1000
        record.update(
            status=status,
            result=result,
            error=error,
            error_details=details,
            completed_at=format_ts(finished),
            finished_at=format_ts(finished),
            duration_ms=duration_ms,
        )
        if record.get("is_root"):
            # Before the record says it ended: whoever sees the outcome sees the workflow
            # memory already removed (with retention 0).
            outcome = "succeeded" if status == "succeeded" else "failed"
            await self.plane.complete(record["workflow_id"], outcome, error)
        if not await store.finish_execution(record):
            # another finisher (a status post, the deadline, another instance) came first
            return await self.get(execution_id)
        self.plane.count(status)
        wakeup = self._wakeups.get(execution_id)
        if wakeup is not None:
            wakeup.set()
        return record

    # ------------------------------------------------------------ background
    def run_in_background(self, started: Started) -> None:
        task = asyncio.get_running_loop().create_task(self._run_logged(started))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_logged(self, started: Started) -> None:
        try:
            await self.run(started)
        except Exception:
            log.exception("execution %s failed in the gateway", started.record["execution_id"])

    async def _stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _kind(node: dict[str, Any], name: str) -> str:
    if name in component_names(node, "reasoners"):
        return "reasoner"
    if name in component_names(node, "skills"):
        return "skill"
    raise ReasonerNotFound(
        f"agent node {node['id']!r} has no reasoner or skill {name!r}",
        details={
            "node_id": node["id"],
            "reasoner": name,
            "reasoners": component_names(node, "reasoners"),
            "skills": component_names(node, "skills"),
        },
    )


def with_wrapper_hint(message: str, fields: tuple[str, ...]) -> str:
    """``message`` with a hint when the caller left out the ``{"input": {...}}`` wrapper:
    the body had no ``input``, and the callee's complaint names one of its top-level fields
    (``missing a required argument: 'ticket_id'``)."""
    if not any(f"'{name}'" in message for name in fields):
        return message
    wrapped = ", ".join(f'"{name}": ...' for name in fields)
    return (
        f'{message} (the body is missing the {{"input": {{...}}}} wrapper: '
        f'send {{"input": {{{wrapped}}}}})'
    )


def raise_for_failure(record: dict[str, Any]) -> None:
    """The synchronous route's errors for a failed record (what ``Agent.call`` raises)."""
    details = record.get("error_details") or {}
    message = record.get("error") or "execution failed"
    ids = {
        "execution_id": record["execution_id"],
        "workflow_id": record["workflow_id"],
        "node_id": record["node_id"],
        "reasoner": record["reasoner"],
    }
    if details.get("reason") in ("unreachable", "timeout", "no_url"):
        raise NodeUnreachable(message, details={**ids, "reason": details["reason"]})
    if details.get("reason") == "callee_error":
        callee = int(details.get("callee_status") or 502)
        if callee == 404 and details.get("error_code") == "reasoner_not_found":
            raise ReasonerNotFound(message, details=ids)
        raise ExecutionError(
            message,
            status=callee if 400 <= callee < 500 else 502,
            details={
                **ids,
                "error_code": details.get("error_code"),
                "error_details": details.get("error_details"),
                "callee_status": callee,
            },
        )
    status = 504 if details.get("reason") == "deadline" else 502
    raise ExecutionError(message, status=status, details={**ids, "error_details": details})


OPENAPI_PATHS = EXECUTION_PATHS


def routes(service: MemoryService) -> list[Route]:
    gateway = Gateway(service)
    settings = service.settings

    async def begin(request: Request) -> Started:
        payload = await read_json_object(request, settings, empty_ok=True)
        explicit_wf = "x-workflow-id" in request.headers
        caller = request_context(request)
        access.may_run_workflow(caller.workflow_id)
        return await gateway.start(request.path_params["target"], payload, caller, explicit_wf)

    async def execute(request: Request) -> Response:
        record = await gateway.run(await begin(request))
        if record["status"] != "succeeded":
            raise_for_failure(record)
        body = {
            "execution_id": record["execution_id"],
            "workflow_id": record["workflow_id"],
            "run_id": record["run_id"],
            "status": record["status"],
            "result": record["result"],
            "duration_ms": record["duration_ms"],
            "finished_at": record["finished_at"],
        }
        return json_response(body, headers=_id_headers(record))

    async def execute_async(request: Request) -> Response:
        started = await begin(request)
        gateway.run_in_background(started)
        record = started.record
        body = {
            "execution_id": record["execution_id"],
            "run_id": record["run_id"],
            "workflow_id": record["workflow_id"],
            "status": "queued",
            "target": record["target"],
            "type": record["type"],
            "created_at": record["started_at"],
            "enqueued_at": record["started_at"],
            "webhook_registered": False,
        }
        return json_response(body, 202, headers=_id_headers(record))

    async def get_execution(request: Request) -> Response:
        record = await gateway.get(request.path_params["execution_id"])
        access.current().require("read", "workflow", record["workflow_id"])
        return json_response(render(record))

    async def post_status(request: Request) -> Response:
        payload = await read_json_object(request, settings)
        execution_id = request.path_params["execution_id"]
        existing = None
        try:  # the key's grants first; an unknown id is told apart after the body's check
            existing = await gateway.get(execution_id)
            access.current().require("write", "workflow", existing["workflow_id"])
        except ExecutionNotFound:
            pass
        record = await gateway.report(execution_id, payload, existing)
        return json_response(render(record))

    return [
        Route("/execute/async/{target}", execute_async, methods=["POST"]),
        Route("/execute/{target}", execute, methods=["POST"]),
        Route("/executions/{execution_id}", get_execution, methods=["GET"]),
        Route("/executions/{execution_id}/status", post_status, methods=["POST"]),
    ]


def _id_headers(record: dict[str, Any]) -> dict[str, str]:
    return {"X-Execution-ID": record["execution_id"], "X-Run-ID": record["run_id"]}
