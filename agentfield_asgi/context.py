"""The execution context: who is calling, in which workflow, for which session.

The one place that knows the protocol's header names. Everything that reads or
writes context headers (server routes, middleware, client transports, the agent
node) goes through :func:`ExecutionContext.from_headers` /
:meth:`ExecutionContext.to_headers`.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass, fields, replace

HEADER_WORKFLOW_ID = "X-Workflow-ID"
HEADER_SESSION_ID = "X-Session-ID"
HEADER_ACTOR_ID = "X-Actor-ID"
HEADER_RUN_ID = "X-Run-ID"
HEADER_WORKFLOW_RUN_ID = "X-Workflow-Run-ID"
HEADER_EXECUTION_ID = "X-Execution-ID"
HEADER_PARENT_EXECUTION_ID = "X-Parent-Execution-ID"
HEADER_ROOT_WORKFLOW_ID = "X-Root-Workflow-ID"
HEADER_PARENT_WORKFLOW_ID = "X-Parent-Workflow-ID"
HEADER_AGENT_NODE_ID = "X-Agent-Node-ID"
HEADER_API_KEY = "X-API-Key"

# field name -> header name; the order is how headers are emitted.
_FIELD_HEADERS: dict[str, str] = {
    "workflow_id": HEADER_WORKFLOW_ID,
    "session_id": HEADER_SESSION_ID,
    "actor_id": HEADER_ACTOR_ID,
    "run_id": HEADER_RUN_ID,
    "execution_id": HEADER_EXECUTION_ID,
    "parent_execution_id": HEADER_PARENT_EXECUTION_ID,
    "root_workflow_id": HEADER_ROOT_WORKFLOW_ID,
    "parent_workflow_id": HEADER_PARENT_WORKFLOW_ID,
    "agent_node_id": HEADER_AGENT_NODE_ID,
}
# lower-cased header name -> field; one pass over a request's headers reads the context.
_HEADER_FIELDS: dict[str, str] = {
    **{header.lower(): name for name, header in _FIELD_HEADERS.items()},
    HEADER_WORKFLOW_RUN_ID.lower(): "workflow_run_id",
}
_RAW_HEADER_FIELDS: dict[bytes, str] = {k.encode("latin-1"): v for k, v in _HEADER_FIELDS.items()}
CONTEXT_HEADERS: tuple[str, ...] = (*_FIELD_HEADERS.values(), HEADER_WORKFLOW_RUN_ID)
SCOPE_HEADERS: dict[str, str] = {
    "workflow": HEADER_WORKFLOW_ID,
    "session": HEADER_SESSION_ID,
    "actor": HEADER_ACTOR_ID,
}
"""The header carrying each scope's id (the global scope has none: its id is ``global``)."""


def new_workflow_id() -> str:
    """A fresh workflow id in the protocol's format ``wf-<hex>``."""
    return f"wf-{secrets.token_hex(8)}"


def new_execution_id() -> str:
    """A fresh execution id (``exec-<hex>``)."""
    return f"exec-{secrets.token_hex(8)}"


def new_run_id() -> str:
    """A fresh run id (``run-<hex>``)."""
    return f"run-{secrets.token_hex(8)}"


@dataclass(frozen=True, slots=True)
class ExecutionContext:
    """The ids that scope memory and link executions into a call tree."""

    workflow_id: str | None = None
    session_id: str | None = None
    actor_id: str | None = None
    run_id: str | None = None
    execution_id: str | None = None
    parent_execution_id: str | None = None
    root_workflow_id: str | None = None
    parent_workflow_id: str | None = None
    agent_node_id: str | None = None

    @classmethod
    def from_headers(
        cls, headers: Mapping[str, str] | Iterable[tuple[bytes, bytes]]
    ) -> ExecutionContext:
        """Read the context from HTTP headers (a mapping, or raw ASGI header pairs).

        When ``X-Workflow-ID`` is absent the run id (``X-Run-ID`` or
        ``X-Workflow-Run-ID``) is the workflow id, as the protocol says.
        """
        values: dict[str, str] = {}
        if isinstance(headers, Mapping):
            for name, value in headers.items():
                field_name = _HEADER_FIELDS.get(name.lower())
                if field_name is not None and value:
                    values[field_name] = value
        else:  # ASGI names are lower-case already; only matching values are decoded
            for raw_name, raw_value in headers:
                field_name = _RAW_HEADER_FIELDS.get(raw_name) or _RAW_HEADER_FIELDS.get(
                    raw_name.lower()
                )
                if field_name is not None and raw_value:
                    values[field_name] = raw_value.decode("latin-1")
        run_id = values.get("run_id") or values.pop("workflow_run_id", None)
        values.pop("workflow_run_id", None)
        if run_id:
            values["run_id"] = run_id
            values.setdefault("workflow_id", run_id)
        return cls(**values)

    def to_headers(self) -> dict[str, str]:
        """The context as HTTP headers; absent ids are omitted."""
        out: dict[str, str] = {}
        for name, header in _FIELD_HEADERS.items():
            value = getattr(self, name)
            if value:
                out[header] = value
        if self.run_id:
            out[HEADER_WORKFLOW_RUN_ID] = self.run_id
        return out

    def with_updates(self, **changes: str | None) -> ExecutionContext:
        """A copy with some ids replaced."""
        return replace(self, **changes)

    def child(self, *, agent_node_id: str | None = None) -> ExecutionContext:
        """The context for a call made from this execution: same workflow, new execution."""
        return replace(
            self,
            execution_id=new_execution_id(),
            parent_execution_id=self.execution_id,
            agent_node_id=agent_node_id or self.agent_node_id,
        )

    @classmethod
    def new_root(cls, **ids: str | None) -> ExecutionContext:
        """Start a new workflow (its root execution), keeping any ids given."""
        workflow_id = ids.pop("workflow_id", None) or new_workflow_id()
        return cls(
            workflow_id=workflow_id,
            run_id=ids.pop("run_id", None) or workflow_id,
            root_workflow_id=ids.pop("root_workflow_id", None) or workflow_id,
            execution_id=ids.pop("execution_id", None) or new_execution_id(),
            **ids,
        )

    def as_dict(self) -> dict[str, str | None]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


_current: ContextVar[ExecutionContext | None] = ContextVar(
    "agentfield_execution_context", default=None
)


def current_context() -> ExecutionContext | None:
    """The execution context of the running request or reasoner, if any."""
    return _current.get()


def set_current_context(ctx: ExecutionContext | None) -> Token[ExecutionContext | None]:
    """Set the current context; pass the returned token to :func:`reset_current_context`."""
    return _current.set(ctx)


def reset_current_context(token: Token[ExecutionContext | None]) -> None:
    _current.reset(token)
