"""Execution records: their fields, AgentField's status words, the callee's context.

Pure functions (no I/O), shared by the gateway routes and the workflow lifecycle.
"""

from __future__ import annotations

from typing import Any

from ..codec import format_ts, now_us
from ..context import ExecutionContext, new_execution_id
from ..errors import INVALID_PARAMETER, BadRequest

TERMINAL = frozenset({"succeeded", "failed", "cancelled", "timeout"})
WAITING = frozenset({"pending", "queued", "waiting", "running"})
# AgentField's aliases for its canonical words (what its SDKs may post).
ALIASES = {
    "success": "succeeded",
    "successful": "succeeded",
    "completed": "succeeded",
    "complete": "succeeded",
    "done": "succeeded",
    "ok": "succeeded",
    "error": "failed",
    "failure": "failed",
    "errored": "failed",
    "canceled": "cancelled",
    "timed_out": "timeout",
    "processing": "running",
    "in_progress": "running",
}
CALLER_HEADER = "X-Caller-Agent-ID"
"""The calling node, as AgentField's SDKs name it (ours also sends ``X-Agent-Node-ID``)."""


def normalize_status(value: Any) -> str:
    """A posted status as one of AgentField's words (400 for anything else)."""
    word = value.strip().lower() if isinstance(value, str) else ""
    word = ALIASES.get(word, word)
    if word not in TERMINAL | WAITING:
        raise BadRequest(
            f"unsupported status {value!r}",
            code=INVALID_PARAMETER,
            details={"field": "status", "allowed": sorted(TERMINAL | WAITING)},
        )
    return word


def callee_context(
    caller: ExecutionContext, explicit_workflow: bool, workflow_known: bool
) -> tuple[ExecutionContext, bool]:
    """The context the callee runs in, and whether it is the root of a new workflow.

    * a call from inside an execution (it carries an execution id) is a child in the
      caller's workflow;
    * a call naming a workflow with ``X-Workflow-ID`` joins it (a workflow driven from
      outside, completed with ``POST /workflows/{id}/complete``);
    * a call with only a run id (AgentField's clients always send ``X-Run-ID``) starts
      that run as a new workflow, unless the run is already known;
    * a call without any starts a new workflow.
    """
    if caller.workflow_id and (caller.execution_id or explicit_workflow or workflow_known):
        child = caller.with_updates(
            execution_id=new_execution_id(),
            parent_execution_id=caller.execution_id,
            root_workflow_id=caller.root_workflow_id or caller.workflow_id,
            run_id=caller.run_id or caller.workflow_id,
        )
        return child, False
    root = ExecutionContext.new_root(
        workflow_id=caller.workflow_id,
        session_id=caller.session_id,
        actor_id=caller.actor_id,
        agent_node_id=caller.agent_node_id,
    )
    return root, True


def start_record(
    ctx: ExecutionContext,
    node_id: str,
    name: str,
    kind: str,
    caller: ExecutionContext,
    is_root: bool,
    deadline_seconds: float,
) -> dict[str, Any]:
    """A new execution record, ``running``."""
    started = now_us()
    return {
        "execution_id": ctx.execution_id,
        "run_id": ctx.run_id or ctx.workflow_id,
        "workflow_id": ctx.workflow_id,
        "root_workflow_id": ctx.root_workflow_id,
        "parent_execution_id": ctx.parent_execution_id,
        "node_id": node_id,
        "reasoner": name,
        "target": f"{node_id}.{name}",
        "type": kind,
        "caller_node_id": caller.agent_node_id,
        "session_id": ctx.session_id,
        "actor_id": ctx.actor_id,
        "status": "running",
        "is_root": is_root,
        "started_at": format_ts(started),
        "started_us": started,
        "deadline_us": started + int(deadline_seconds * 1_000_000),
    }


def forward_headers(record: dict[str, Any]) -> dict[str, str]:
    """Every context header an AgentField node (or ours) reads, for the callee."""
    ctx = ExecutionContext(
        workflow_id=record["workflow_id"],
        session_id=record.get("session_id"),
        actor_id=record.get("actor_id"),
        run_id=record["run_id"],
        execution_id=record["execution_id"],
        parent_execution_id=record.get("parent_execution_id"),
        root_workflow_id=record.get("root_workflow_id"),
        agent_node_id=record.get("caller_node_id"),
    )
    headers = ctx.to_headers()
    if record.get("caller_node_id"):
        headers[CALLER_HEADER] = record["caller_node_id"]
    return headers


def render(record: dict[str, Any]) -> dict[str, Any]:
    """``GET /executions/{id}`` as AgentField answers it (plus our ids)."""
    out = {
        "execution_id": record["execution_id"],
        "run_id": record["run_id"],
        "workflow_id": record["workflow_id"],
        "parent_execution_id": record.get("parent_execution_id"),
        "node_id": record["node_id"],
        "target": record["target"],
        "type": record["type"],
        "status": record["status"],
        "result": record.get("result"),
        "error": record.get("error"),
        "error_message": record.get("error"),
        "error_details": record.get("error_details"),
        "started_at": record["started_at"],
        "completed_at": record.get("completed_at"),
        "duration_ms": record.get("duration_ms"),
        "webhook_registered": False,
    }
    return out
