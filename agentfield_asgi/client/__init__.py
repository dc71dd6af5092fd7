"""The client SDK: scoped memory over HTTP or in process."""

from .memory import BaseMemoryClient, MemoryClient, ScopedMemoryClient
from .transport import HTTPTransport, InProcessTransport, Reply, Transport, shared_http_transport

__all__ = [
    "BaseMemoryClient",
    "HTTPTransport",
    "InProcessTransport",
    "MemoryClient",
    "Reply",
    "ScopedMemoryClient",
    "Transport",
    "shared_http_transport",
]
