"""How the SDK reaches the control plane: one :class:`Transport` interface
(``base.py``), HTTP (``http.py``) and, with the server, the in-process transport
(``agentfield_asgi/server/in_process.py``)."""

from .http import (
    API_PREFIX,
    DEFAULT_TIMEOUT,
    HTTPTransport,
    Reply,
    Transport,
    shared_http_transport,
)

__all__ = [
    "API_PREFIX",
    "DEFAULT_TIMEOUT",
    "HTTPTransport",
    "Reply",
    "Transport",
    "shared_http_transport",
]
