"""Control plane (ext): agent-node registry, execute, executions and workflow lifecycle.

* ``POST /nodes/register``, ``GET /nodes``: agent nodes announce their URL and reasoners.
* ``POST /execute/{node_id}.{reasoner}`` with ``{"input": {...}}``: forwards to the node's
  ``POST /reasoners/{reasoner}`` with the caller's workflow/session/actor ids and a new
  execution id whose parent is the caller's execution. Without a workflow id it starts a
  new workflow whose root is this execution; when the root finishes (success or
  error) the workflow is complete.
* ``POST /workflows/{id}/complete`` (for workflows driven from outside a node) and
  ``GET /workflows/{id}``.

Completing a workflow removes its workflow-scope memory (one ``delete`` event per key)
after ``Settings.workflow_retention_seconds`` (0: before the completing call answers).
Session, actor and global memory are never touched.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import TYPE_CHECKING, Any

import httpx
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from ..client.transports.http import HTTPTransport, Reply, shared_http_transport
from ..codec import format_ts, now_us
from ..context import ExecutionContext, new_execution_id
from ..errors import (
    BadRequest,
    ExecutionError,
    NodeNotFound,
    NodeUnreachable,
    ReasonerNotFound,
    WorkflowNotFound,
)
from ..store.base import ClearOp
from .http import json_response, read_json_object, request_context

if TYPE_CHECKING:
    from .app import MemoryService

log = logging.getLogger("agentfield_asgi.workflows")

STATUSES = ("running", "succeeded", "failed")
MAX_ID_LENGTH = 256


class ControlPlane:
    """Node registry, execution forwarding and workflow completion for one service."""

    def __init__(self, service: MemoryService) -> None:
        self.service = service
        self.local_nodes: dict[str, HTTPTransport] = {}
        self._removals: set[asyncio.Task[None]] = set()
        service.on_stop(self._stop)

    def attach_local_node(self, node_id: str, app: ASGIApp) -> None:
        """Forward executions for ``node_id`` to ``app`` in this process (no socket)."""
        self.local_nodes[node_id] = HTTPTransport(
            f"http://{node_id}.local", transport=httpx.ASGITransport(app=app)
        )

    # ------------------------------------------------------------ nodes
    async def register(self, payload: dict[str, Any]) -> dict[str, Any]:
        node_id = _identifier(payload.get("node_id"), "node_id")
        base_url = payload.get("base_url")
        if base_url is not None and (
            not isinstance(base_url, str) or not base_url.startswith(("http://", "https://"))
        ):
            raise BadRequest("'base_url' must be an http(s) URL", code="invalid_parameter")
        reasoners = payload.get("reasoners") or []
        if not isinstance(reasoners, list):
            raise BadRequest("'reasoners' must be a list", code="invalid_parameter")
        names = [
            _identifier(r.get("id") if isinstance(r, dict) else r, "reasoner") for r in reasoners
        ]
        info = {
            "node_id": node_id,
            "base_url": base_url.rstrip("/") if base_url else None,
            "reasoners": sorted(set(names)),
            "registered_at": format_ts(now_us()),
        }
        store = await self.service.ready()
        await store.put_node(node_id, info)
        log.info(
            "node %s registered at %s with %d reasoners", node_id, info["base_url"], len(names)
        )
        return info

    async def node(self, node_id: str) -> dict[str, Any]:
        store = await self.service.ready()
        for info in await store.get_nodes():
            if info.get("node_id") == node_id:
                return info
        raise NodeNotFound(f"no agent node {node_id!r} is registered", details={"node_id": node_id})

    # ------------------------------------------------------------ execute
    async def execute(
        self, target: str, payload: dict[str, Any], caller: ExecutionContext
    ) -> dict[str, Any]:
        node_id, _, reasoner = target.rpartition(".")
        if not node_id or not reasoner:
            raise BadRequest(
                "target must be '<node_id>.<reasoner>'",
                code="invalid_target",
                details={"target": target},
            )
        kwargs = payload.get("input", {})
        if kwargs is None:
            kwargs = {}
        if not isinstance(kwargs, dict):
            raise BadRequest("'input' must be an object of keyword arguments", code="invalid_input")
        node = await self.node(node_id)
        if reasoner not in node.get("reasoners", []):
            raise ReasonerNotFound(
                f"agent node {node_id!r} has no reasoner {reasoner!r}",
                details={
                    "node_id": node_id,
                    "reasoner": reasoner,
                    "reasoners": node.get("reasoners", []),
                },
            )
        ctx, is_root = _callee_context(caller)
        execution = {
            "execution_id": ctx.execution_id,
            "workflow_id": ctx.workflow_id,
            "parent_execution_id": ctx.parent_execution_id,
            "node_id": node_id,
            "reasoner": reasoner,
            "caller_node_id": caller.agent_node_id,
            "session_id": ctx.session_id,
            "actor_id": ctx.actor_id,
            "status": "running",
            "started_at": format_ts(now_us()),
        }
        await self._begin(execution, is_root)
        try:
            reply = await self._forward(node, reasoner, kwargs, ctx)
        except BaseException as exc:
            await self._end(execution, is_root, "failed", str(exc))
            raise
        if reply.ok:
            await self._end(execution, is_root, "succeeded", None)
            return {
                "execution_id": ctx.execution_id,
                "workflow_id": ctx.workflow_id,
                "status": "succeeded",
                "result": reply.body,
            }
        message, code, details = reply.error_fields()
        await self._end(execution, is_root, "failed", message)
        if reply.status == 404 and code == "reasoner_not_found":
            raise ReasonerNotFound(message, details={"node_id": node_id, "reasoner": reasoner})
        raise ExecutionError(
            message,
            status=reply.status if 400 <= reply.status < 500 else 502,
            details={
                "execution_id": ctx.execution_id,
                "workflow_id": ctx.workflow_id,
                "node_id": node_id,
                "reasoner": reasoner,
                "error_code": code,
                "error_details": details,
                "callee_status": reply.status,
            },
        )

    async def _forward(
        self, node: dict[str, Any], reasoner: str, kwargs: dict[str, Any], ctx: ExecutionContext
    ) -> Reply:
        node_id = node["node_id"]
        transport = self.local_nodes.get(node_id)
        if transport is None:
            if not node.get("base_url"):
                raise NodeUnreachable(
                    f"agent node {node_id!r} registered no public URL", details={"node_id": node_id}
                )
            transport = shared_http_transport(node["base_url"])
        reply = await transport.request(
            "POST",
            f"/reasoners/{reasoner}",
            json=kwargs,
            headers=ctx.to_headers(),
            timeout_seconds=self.service.settings.execute_timeout_seconds,
        )
        if (
            reply.status in (503, 504)
            and isinstance(reply.body, dict)
            and reply.body.get("code")
            in (
                "unreachable",
                "timeout",
            )
        ):
            raise NodeUnreachable(
                reply.body["error"], details={"node_id": node_id, "reason": reply.body["code"]}
            )
        return reply

    async def _begin(self, execution: dict[str, Any], is_root: bool) -> None:
        store = await self.service.ready()
        workflow_id = execution["workflow_id"]
        if is_root or await store.get_workflow(workflow_id) is None:
            await store.put_workflow(
                {
                    "workflow_id": workflow_id,
                    "status": "running",
                    "root_execution_id": execution["execution_id"] if is_root else None,
                    "session_id": execution["session_id"],
                    "actor_id": execution["actor_id"],
                    "started_at": execution["started_at"],
                }
            )
        await store.put_execution(execution)

    async def _end(
        self, execution: dict[str, Any], is_root: bool, status: str, error: str | None
    ) -> None:
        execution.update(status=status, error=error, finished_at=format_ts(now_us()))
        store = await self.service.ready()
        await store.put_execution(execution)
        if is_root:
            await self.complete(execution["workflow_id"], status, error)

    # ------------------------------------------------------------ workflows
    async def workflow(self, workflow_id: str) -> dict[str, Any]:
        store = await self.service.ready()
        workflow = await store.get_workflow(workflow_id)
        if workflow is None:
            raise WorkflowNotFound(
                f"no workflow {workflow_id!r}", details={"workflow_id": workflow_id}
            )
        return workflow

    async def complete(
        self, workflow_id: str, status: str = "succeeded", error: str | None = None
    ) -> dict[str, Any]:
        """Mark the workflow finished and remove its workflow memory (now or after retention)."""
        store = await self.service.ready()
        workflow = await store.get_workflow(workflow_id) or {
            "workflow_id": workflow_id,
            "root_execution_id": None,
        }
        workflow.pop("executions", None)
        retention = self.service.settings.workflow_retention_seconds
        completed = now_us()
        workflow.update(
            status=status,
            error=error,
            completed_at=format_ts(completed),
            memory_removed_at=format_ts(completed + int(retention * 1_000_000)),
        )
        await store.put_workflow(workflow)
        if retention <= 0:
            await self._remove_memory(workflow_id)
        else:
            task = asyncio.get_running_loop().create_task(
                self._remove_later(workflow_id, retention)
            )
            self._removals.add(task)
            task.add_done_callback(self._removals.discard)
        return workflow

    async def _remove_memory(self, workflow_id: str) -> int:
        store = await self.service.ready()
        metadata = {
            "agent_id": None,
            "actor_id": None,
            "workflow_id": workflow_id,
            "reason": "workflow_completed",
        }
        (removed,) = await store.write([ClearOp("workflow", workflow_id, event_metadata=metadata)])
        log.debug("workflow %s complete: removed %d keys", workflow_id, removed)
        return int(removed)

    async def _remove_later(self, workflow_id: str, delay: float) -> None:
        await asyncio.sleep(delay)
        try:
            await self._remove_memory(workflow_id)
        except Exception:
            log.exception("could not remove the memory of workflow %s", workflow_id)

    async def _stop(self) -> None:
        for task in list(self._removals):
            task.cancel()
        await asyncio.gather(*self._removals, return_exceptions=True)
        for transport in self.local_nodes.values():
            await transport.aclose()


def _callee_context(caller: ExecutionContext) -> tuple[ExecutionContext, bool]:
    """The context the callee runs in, and whether it is the root of a new workflow."""
    if not caller.workflow_id:
        root = ExecutionContext.new_root(
            session_id=caller.session_id,
            actor_id=caller.actor_id,
            agent_node_id=caller.agent_node_id,
        )
        return root, True
    child = caller.with_updates(
        execution_id=new_execution_id(),
        parent_execution_id=caller.execution_id,
        root_workflow_id=caller.root_workflow_id or caller.workflow_id,
    )
    return child, False


def _identifier(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_ID_LENGTH:
        raise BadRequest(
            f"'{field}' must be a non-empty string of at most {MAX_ID_LENGTH} characters",
            code="invalid_parameter",
            details={"field": field},
        )
    return value


_planes: weakref.WeakKeyDictionary[MemoryService, ControlPlane] = weakref.WeakKeyDictionary()


def control_plane(service: MemoryService) -> ControlPlane:
    """The service's :class:`ControlPlane` (one per service)."""
    plane = _planes.get(service)
    if plane is None:
        plane = _planes[service] = ControlPlane(service)
    return plane


def routes(service: MemoryService) -> list[Route]:
    plane = control_plane(service)
    settings = service.settings

    async def register(request: Request) -> Response:
        return json_response(await plane.register(await read_json_object(request, settings)))

    async def list_nodes(request: Request) -> Response:
        store = await service.ready()
        return json_response(await store.get_nodes())

    async def execute(request: Request) -> Response:
        payload = await read_json_object(request, settings, empty_ok=True)
        result = await plane.execute(
            request.path_params["target"], payload, request_context(request)
        )
        return json_response(result)

    async def complete(request: Request) -> Response:
        payload = await read_json_object(request, settings, empty_ok=True)
        status = payload.get("status", "succeeded")
        if status not in ("succeeded", "failed"):
            raise BadRequest("'status' must be 'succeeded' or 'failed'", code="invalid_parameter")
        error = payload.get("error")
        workflow_id = _identifier(request.path_params["workflow_id"], "workflow_id")
        return json_response(
            await plane.complete(workflow_id, status, None if error is None else str(error))
        )

    async def get_workflow(request: Request) -> Response:
        return json_response(await plane.workflow(request.path_params["workflow_id"]))

    return [
        Route("/nodes/register", register, methods=["POST"]),
        Route("/nodes", list_nodes, methods=["GET"]),
        Route("/execute/{target}", execute, methods=["POST"]),
        Route("/workflows/{workflow_id}/complete", complete, methods=["POST"]),
        Route("/workflows/{workflow_id}", get_workflow, methods=["GET"]),
    ]
