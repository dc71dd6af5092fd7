"""Control plane (ext): workflow lifecycle, and in-process agent nodes.

The node registry is in ``nodes.py``, the execution gateway in ``executions.py``. When a
workflow's root execution ends (success or error, whichever node ran it) the gateway
completes the workflow here.

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

from ..client.transports.http import HTTPTransport
from ..codec import format_ts, now_us
from ..errors import (
    INVALID_PARAMETER,
    BadRequest,
    WorkflowNotFound,
)
from ..store.base import ClearOp
from . import access
from .http import json_response, read_json_object
from .nodes import identifier

if TYPE_CHECKING:
    from .app import MemoryService

log = logging.getLogger("agentfield_asgi.workflows")


class ControlPlane:
    """Workflow records and completion, and the in-process nodes, for one service."""

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

    async def begin(self, execution: dict[str, Any], is_root: bool) -> None:
        """Store a new execution (and its workflow, when the workflow is new)."""
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
        self.count(execution["status"])

    def count(self, status: str) -> None:
        """One more execution in ``status`` (the executions-by-status metric)."""
        if self.service.metrics is not None:
            self.service.metrics.executions.labels(status).inc()

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

    async def complete(request: Request) -> Response:
        payload = await read_json_object(request, settings, empty_ok=True)
        status = payload.get("status", "succeeded")
        if status not in ("succeeded", "failed"):
            raise BadRequest("'status' must be 'succeeded' or 'failed'", code=INVALID_PARAMETER)
        error = payload.get("error")
        workflow_id = identifier(request.path_params["workflow_id"], "workflow_id")
        access.current().require("write", "workflow", workflow_id)
        return json_response(
            await plane.complete(workflow_id, status, None if error is None else str(error))
        )

    async def get_workflow(request: Request) -> Response:
        access.current().require("read", "workflow", request.path_params["workflow_id"])
        return json_response(await plane.workflow(request.path_params["workflow_id"]))

    return [
        Route("/workflows/{workflow_id}/complete", complete, methods=["POST"]),
        Route("/workflows/{workflow_id}", get_workflow, methods=["GET"]),
    ]
