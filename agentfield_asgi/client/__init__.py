"""The client SDK: scoped memory over HTTP or in process."""

from .memory import BaseMemoryClient, MemoryClient, ScopedMemoryClient
from .subscriptions import ChangeSubscription, MemoryChangeEvent, MemoryEvents, StreamReset
from .transports.http import (
    HTTPTransport,
    InProcessTransport,
    Reply,
    Transport,
    shared_http_transport,
)

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
