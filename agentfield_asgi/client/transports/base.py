"""The transport interface: one request call and one event stream.

A client holds a :class:`Transport` and never knows which one: HTTP
(:mod:`.http`) or the in-process transport that lives with the server
(``agentfield_asgi/server/in_process.py``).

Callers get a :class:`Reply` whatever happens: an unreachable server or a timeout
becomes a reply with status 503/504 and the protocol's error body, so each client
raises its own typed error from one place.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ...errors import MemoryAccessError
from ..change_events import Filter, MemoryChangeEvent, StreamReset

API_PREFIX = "/api/v1"
DEFAULT_TIMEOUT = 10.0


@dataclass(slots=True)
class Reply:
    """A decoded answer: status, JSON body (None when empty) and headers."""

    status: int
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def error_fields(self) -> tuple[str, str, dict[str, Any]]:
        """``(message, code, details)`` from a protocol error body (or a best guess)."""
        body = self.body
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            details = body.get("details")
            return (
                body["error"],
                str(body.get("code") or "error"),
                details if isinstance(details, dict) else {},
            )
        text = body if isinstance(body, str) else f"HTTP {self.status}"
        return text, f"http_{self.status}", {}

    def access_error(self) -> MemoryAccessError:
        message, code, details = self.error_fields()
        return MemoryAccessError(message, status=self.status, code=code, details=details)


EventItem = str | MemoryChangeEvent | StreamReset
"""What an event stream yields, in order: ``"connected"`` once it is live, then events
and resets."""


class StreamRefused(Exception):
    """The server refused the stream for a reason retrying cannot fix (bad filter, auth);
    ``args[0]`` is the :class:`MemoryAccessError`."""


class EventSource(abc.ABC):
    """One subscriber's connection to the change events (see :meth:`Transport.event_source`)."""

    @abc.abstractmethod
    def open(
        self, flt: Filter, after: int | None, headers: Mapping[str, str]
    ) -> AsyncGenerator[EventItem, None]:
        """Stream events matching ``flt`` after id ``after`` (None: live). Returns when the
        server ends the stream; raises :class:`StreamRefused` for a permanent refusal."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections (a no-op where there are none)."""


class Transport(abc.ABC):
    """Sends requests to the control plane (paths start with ``/api/v1``) and opens event
    streams."""

    @abc.abstractmethod
    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_seconds: float | None = None,
    ) -> Reply: ...

    @abc.abstractmethod
    def event_source(self, read_timeout: float) -> EventSource:
        """A source of change events for one set of subscriptions (``read_timeout``: how
        long a quiet stream may stay silent before it is reopened)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections (a no-op where there are none)."""
