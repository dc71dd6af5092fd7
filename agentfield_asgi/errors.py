"""Every error the protocol names, in one hierarchy.

The server renders any :class:`AgentFieldError` as
``{"error": message, "code": code, "details": {...}}`` with its HTTP status;
the client SDK raises :class:`MemoryAccessError` carrying the same three fields.
"""

from __future__ import annotations

from typing import Any


class AgentFieldError(Exception):
    """Base class: an error with an HTTP status and a machine-readable code."""

    status: int = 500
    code: str = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        status: int | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code

    def to_body(self) -> dict[str, Any]:
        """The protocol's error body."""
        return {"error": self.message, "code": self.code, "details": self.details}


class BadRequest(AgentFieldError):
    status = 400
    code = "bad_request"


class InvalidJSON(BadRequest):
    code = "invalid_json"


class InvalidKey(BadRequest):
    code = "invalid_key"


class InvalidScope(BadRequest):
    code = "invalid_scope"


class MissingScopeId(BadRequest):
    code = "missing_scope_id"


class InvalidEmbedding(BadRequest):
    """An embedding that is empty, not all finite numbers, or too long."""

    code = "invalid_embedding"


class InvalidPattern(BadRequest):
    code = "invalid_pattern"


class NotANumber(BadRequest):
    code = "not_a_number"


class OutOfRange(BadRequest):
    code = "out_of_range"


class DimensionMismatch(BadRequest):
    """An embedding whose length differs from the vectors its scope already holds."""

    code = "dimension_mismatch"


class Unauthorized(AgentFieldError):
    status = 401
    code = "unauthorized"


class Forbidden(AgentFieldError):
    """The API key is valid but may not do this (read or write that scope, administer)."""

    status = 403
    code = "forbidden"


class NotFound(AgentFieldError):
    status = 404
    code = "not_found"


class MethodNotAllowed(AgentFieldError):
    status = 405
    code = "method_not_allowed"


class VersionConflict(AgentFieldError):
    """``if_version`` did not match; ``details["current"]`` holds the current record."""

    status = 412
    code = "version_conflict"


class PayloadTooLarge(AgentFieldError):
    status = 413
    code = "payload_too_large"


class TooManyRequests(AgentFieldError):
    status = 429
    code = "too_many_requests"


class SubscriberLimit(TooManyRequests):
    """One client holds ``max_per_client`` subscriptions already (HTTP 429)."""

    code = "too_many_subscriptions"


class StorageUnavailable(AgentFieldError):
    """The database cannot be reached right now; the request may be retried."""

    status = 503
    code = "storage_unavailable"


class NotReady(AgentFieldError):
    """The service is up but cannot serve yet (``GET /api/v1/ready``): storage does not
    answer, its schema is behind, or the writer is down."""

    status = 503
    code = "not_ready"


class VectorsUnavailable(AgentFieldError):
    """The store has no vector part (not open yet, or a backend without one)."""

    status = 501
    code = "not_implemented"

    def __init__(self) -> None:
        super().__init__("vector memory is not available on this backend")


class MemoryAccessError(AgentFieldError):
    """Raised by the client SDK when the memory service answers with an error.

    Named as in AgentField's SDK. Carries the server's ``status``, ``code`` and
    ``message`` (and ``details``).
    """


class NodeNotFound(NotFound):
    code = "node_not_found"


class ReasonerNotFound(NotFound):
    code = "reasoner_not_found"


class NodeUnreachable(AgentFieldError):
    """The control plane could not reach the agent node it forwards an execution to."""

    status = 502
    code = "node_unreachable"


class ExecutionError(AgentFieldError):
    """Raised by ``Agent.call`` when the execution fails: the callee raised, the target is
    unknown (404) or unreachable. ``message`` is the callee's message; ``details`` holds
    ``execution_id``, ``workflow_id`` and the callee's own error ``code``."""

    status = 502
    code = "execution_failed"


class WorkflowNotFound(NotFound):
    code = "workflow_not_found"


class ExecutionNotFound(NotFound):
    code = "execution_not_found"


class ExecutionFinished(AgentFieldError):
    """A status was posted for an execution that has already ended; the first outcome stands."""

    status = 409
    code = "execution_finished"


class NotImplementedFeature(AgentFieldError):
    """An AgentField control-plane feature this service does not provide."""

    status = 501
    code = "not_implemented"


# Codes sent with one of the classes below (``BadRequest(..., code=INVALID_PARAMETER)``):
# named once here, like the classes' own codes, so the OpenAPI document can list them all.
INVALID_FILTERS = "invalid_filters"
INVALID_INPUT = "invalid_input"
INVALID_JSON = "invalid_json"
INVALID_OPERATION = "invalid_operation"
INVALID_PARAMETER = "invalid_parameter"
INVALID_SCOPE_ID = "invalid_scope_id"
INVALID_TARGET = "invalid_target"
INVALID_VALUE = "invalid_value"
MISSING_DATA = "missing_data"
MISSING_SCOPE = "missing_scope"
NOT_IMPLEMENTED = "not_implemented"
TOO_DEEP = "too_deep"
REASONER_ERROR = "reasoner_error"


def error_codes() -> list[str]:
    """Every machine code an error body of this service can carry, sorted."""
    # the module's constants (above) and every class's own code
    found = {v for name, v in globals().items() if name.isupper() and isinstance(v, str)}
    stack: list[type[AgentFieldError]] = [AgentFieldError]
    while stack:
        cls = stack.pop()
        found.add(cls.code)
        stack.extend(cls.__subclasses__())
    return sorted(found)
