"""The client SDK: scoped memory over HTTP or in process."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .change_events import MemoryChangeEvent, StreamReset
from .memory import BaseMemoryClient, MemoryClient, ScopedMemoryClient
from .subscriptions import ChangeSubscription, MemoryEvents
from .transports import HTTPTransport, Reply, Transport, shared_http_transport

if TYPE_CHECKING:
    from ..server.in_process import InProcessTransport


def __getattr__(name: str) -> Any:
    # The in-process transport lives with the server (it calls the routes' functions);
    # it is re-exported here for the public API, resolved on first use so that the
    # client package itself never imports the server.
    if name == "InProcessTransport":
        from ..server.in_process import InProcessTransport

        return InProcessTransport
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BaseMemoryClient",
    "ChangeSubscription",
    "HTTPTransport",
    "InProcessTransport",
    "MemoryChangeEvent",
    "MemoryClient",
    "MemoryEvents",
    "Reply",
    "ScopedMemoryClient",
    "StreamReset",
    "Transport",
    "shared_http_transport",
]
