"""API-key authentication and CORS around the memory app.

When ``Settings.api_keys`` holds any key, every HTTP and WebSocket request needs one,
presented as ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``. Browsers'
``EventSource`` (and the WebSocket constructor) cannot set headers, so the event
streams alone (paths ending ``/events/sse`` and ``/events/ws``) also accept
``?api_key=<key>``; anywhere else a query key is ignored (and so refused), because
URLs end up in access logs, browser history and proxies. The inspector page's data
requests are plain ``fetch`` calls that can send the header, so they need no query form.

Open without a key: ``/api/v1/health`` and routes flagged ``public = True`` (they
must serve no memory data). CORS preflights (``OPTIONS``) are answered by the CORS
layer outside this one. Keys are compared in constant time and never logged.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..codec import dumps
from ..context import HEADER_API_KEY
from ..errors import Unauthorized
from ..settings import Settings
from .access import CARRIED, CURRENT, Access, KeyRing

QUERY_KEY_PARAM = "api_key"
QUERY_KEY_SUFFIXES = ("/events/sse", "/events/ws")
"""Paths (relative to the app) that accept ``?api_key=``: the event streams."""
ALWAYS_PUBLIC = ("/api/v1/health",)

_HEADER = HEADER_API_KEY.lower().encode("latin-1")


def route_path(scope: Scope) -> str:
    """The request path relative to where the app is mounted."""
    path: str = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("", "/"):
        return path[len(root) :]
    return path


def allows_query_key(path: str) -> bool:
    """Whether ``?api_key=`` is accepted on ``path`` (only the event streams)."""
    return path.endswith(QUERY_KEY_SUFFIXES)


def presented_key(scope: Scope) -> str | None:
    """The credential a request presents (header first, then the query where allowed)."""
    for name, value in scope.get("headers", ()):
        if name == _HEADER:
            return value.decode("latin-1")
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    if allows_query_key(route_path(scope)):
        query = scope.get("query_string", b"").decode("latin-1")
        for name, value in parse_qsl(query, keep_blank_values=True):
            if name == QUERY_KEY_PARAM:
                return value
    return None


class KeyChecker:
    """Constant-time membership test against the configured keys."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._ring = KeyRing(keys, None)

    def __bool__(self) -> bool:
        return bool(self._ring)

    def accepts(self, candidate: str | None) -> bool:
        return self._ring.lookup(candidate) is not None


class APIKeyMiddleware:
    """Refuses HTTP and WebSocket requests without a valid key (401 + error body), and sets
    the key's :class:`~.access.Access` for the request (:data:`~.access.CURRENT`)."""

    def __init__(
        self, app: ASGIApp, keys: Iterable[str] | KeyRing, public_paths: Iterable[str] = ()
    ) -> None:
        self.app = app
        self.ring = keys if isinstance(keys, KeyRing) else KeyRing(keys, None)
        self.public = frozenset((*ALWAYS_PUBLIC, *public_paths))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or route_path(scope) in self.public:
            await self.app(scope, receive, send)
            return
        key = presented_key(scope)
        carried = scope.get(CARRIED)  # an in-process caller (access.carry): its own grants
        access = carried if isinstance(carried, Access) else self.ring.lookup(key)
        if access is not None:
            token = CURRENT.set(access)
            try:
                await self.app(scope, receive, send)
            finally:
                CURRENT.reset(token)
            return
        error = Unauthorized(
            "missing API key" if key is None else "invalid API key",
            details={"accepted": _accepted_forms(route_path(scope))},
        )
        if scope["type"] == "http":
            await _send_http(send, 401, error.to_body(), b"http.response")
        elif "websocket.http.response" in scope.get("extensions", {}):
            await receive()  # websocket.connect
            await _send_http(send, 401, error.to_body(), b"websocket.http.response")
        else:
            await receive()
            await send({"type": "websocket.close", "code": 1008, "reason": "unauthorized"})


def _accepted_forms(path: str) -> list[str]:
    forms = [HEADER_API_KEY, "Authorization: Bearer"]
    if allows_query_key(path):
        forms.append(f"?{QUERY_KEY_PARAM}=")
    return forms


async def _send_http(send: Send, status: int, body: object, prefix: bytes) -> None:
    payload = dumps(body)
    kind = prefix.decode()
    start: Message = {
        "type": f"{kind}.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
            (b"www-authenticate", b'Bearer realm="agentfield"'),
        ],
    }
    await send(start)
    await send({"type": f"{kind}.body", "body": payload})


_QUERY_KEY_RE = re.compile(rf"([?&]{QUERY_KEY_PARAM}=)[^&\s\"]*")


def redact_query_keys(text: str) -> str:
    """``text`` with every ``api_key=`` query value replaced by ``***``."""
    return _QUERY_KEY_RE.sub(r"\1***", text)


class RedactKeysFilter(logging.Filter):
    """Logging filter that removes ``?api_key=`` values (uvicorn's access log prints URLs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(
                redact_query_keys(a) if isinstance(a, str) else a for a in record.args
            )
        elif isinstance(record.msg, str):
            record.msg = redact_query_keys(record.msg)
        return True


def wrap_security(
    app: ASGIApp,
    settings: Settings,
    public_paths: Iterable[str] = (),
    ring: KeyRing | None = None,
) -> ASGIApp:
    """Authentication inside CORS (so preflights and 401s carry CORS headers)."""
    if ring is None:
        ring = KeyRing(settings.api_keys, settings.api_keys_file)
    if ring:
        app = APIKeyMiddleware(app, ring, public_paths)
    if settings.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app = CORSMiddleware(
            app,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["*"],
            expose_headers=["X-Next-Cursor"],
        )
    return app
