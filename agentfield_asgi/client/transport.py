"""How the SDK reaches the control plane: one interface, two transports.

* :class:`HTTPTransport`: JSON over HTTP with one pooled ``httpx.AsyncClient`` per
  process and base URL (:func:`shared_http_transport` hands out the same instance),
  context headers injected on every request, configurable timeouts, ``X-API-Key``.
* :class:`InProcessTransport`: the memory service lives in this process. The memory
  operations call the same functions as the routes (same validation) straight
  against the store, with no HTTP; any other path (node registration, execute, and
  routes added later) is dispatched to the service's ASGI app without a socket.

Callers get a :class:`Reply` whatever happens: an unreachable server or a timeout
becomes a reply with status 503/504 and the protocol's error body, so each client
raises its own typed error from one place.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from .. import tracing
from ..codec import JSONDecodeError, dumps, loads
from ..context import HEADER_API_KEY, ExecutionContext
from ..errors import AgentFieldError, InvalidJSON
from ..middleware import apply_context

if TYPE_CHECKING:
    from ..server.app import MemoryService
    from ..store.base import Record

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


class Transport(abc.ABC):
    """Sends one request to the control plane (paths start with ``/api/v1``)."""

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

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections (a no-op where there are none)."""


class HTTPTransport(Transport):
    """JSON over HTTP through one pooled ``httpx.AsyncClient`` (created on first use).

    ``transport`` replaces the network (e.g. ``httpx.ASGITransport``). The client is
    bound to the event loop it was created on; on another loop a fresh one is made.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 100,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self._transport = transport
        self._limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _http(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop or self._client.is_closed:
            headers = {HEADER_API_KEY: self.api_key} if self.api_key else {}
            self._client = httpx.AsyncClient(
                base_url=self.base_url,
                headers=headers,
                timeout=self.timeout,
                limits=self._limits,
                transport=self._transport,
                event_hooks={"request": [_propagate]},
            )
            self._loop = loop
        return self._client

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_seconds: float | None = None,
    ) -> Reply:
        content = None if json is None else dumps(json)
        send_headers = dict(headers or {})
        if content is not None:
            send_headers["Content-Type"] = "application/json"
        tracing.inject(send_headers)  # the callee continues this trace
        try:
            response = await self._http().request(
                method,
                path,
                content=content,
                params=params,
                headers=send_headers,
                timeout=self.timeout if timeout_seconds is None else timeout_seconds,
            )
        except httpx.TimeoutException as exc:
            return _failure(504, "timeout", f"{method} {self.base_url}{path} timed out", exc)
        except httpx.TransportError as exc:
            return _failure(503, "unreachable", f"cannot reach {self.base_url}: {exc!r}", exc)
        return Reply(response.status_code, _decode(response.content), response.headers)

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None and self._loop is asyncio.get_running_loop():
            await client.aclose()


async def _propagate(request: httpx.Request) -> None:
    apply_context(request)


def _decode(content: bytes) -> Any:
    if not content:
        return None
    try:
        return loads(content)
    except JSONDecodeError:
        return content.decode("utf-8", "replace")


def _failure(status: int, code: str, message: str, exc: Exception) -> Reply:
    return Reply(
        status, {"error": message, "code": code, "details": {"exception": type(exc).__name__}}
    )


# One pooled transport per (base URL, API key) in this process.
_shared: dict[tuple[str, str | None], HTTPTransport] = {}


def shared_http_transport(base_url: str, *, api_key: str | None = None) -> HTTPTransport:
    """The process-wide :class:`HTTPTransport` for ``base_url`` (created on first request)."""
    key = (base_url.rstrip("/"), api_key)
    transport = _shared.get(key)
    if transport is None:
        transport = _shared[key] = HTTPTransport(base_url, api_key=api_key)
    return transport


# ---------------------------------------------------------------- in process

# Memory operations the in-process transport runs directly (no HTTP).
_DIRECT: dict[tuple[str, str], str] = {
    ("POST", f"{API_PREFIX}/memory/set"): "set",
    ("POST", f"{API_PREFIX}/memory/get"): "get",
    ("POST", f"{API_PREFIX}/memory/delete"): "delete",
    ("GET", f"{API_PREFIX}/memory/list"): "list",
}


def _record_body(record: Record) -> dict[str, Any]:
    return {**record.to_dict(), "data": record.data}


async def _run_direct(
    service: MemoryService, op: str, body: Any, params: Mapping[str, str], ctx: ExecutionContext
) -> Reply:
    # Imported here: the server sits above the client in the layering, and only an
    # in-process client (whose host built a service) ever needs it.
    from ..server import memory_routes as ops

    if op == "list":
        records, cursor = await ops.apply_list(service, params, ctx)
        headers = {"X-Next-Cursor": cursor} if cursor else {}
        return Reply(200, [_record_body(r) for r in records], headers)
    if not isinstance(body, dict):
        raise InvalidJSON("request body must be a JSON object")
    if op == "delete":
        await ops.apply_delete(service, body, ctx)
        return Reply(204)
    apply = ops.apply_set if op == "set" else ops.apply_get
    return Reply(200, _record_body(await apply(service, body, ctx)))


class InProcessTransport(HTTPTransport):
    """Talks to a :class:`~agentfield_asgi.server.app.MemoryService` in this process.

    Memory set/get/delete/list run directly against the store (the routes' own
    validation functions, no HTTP); other paths go through the service's ASGI app
    in memory, so every route works here too.
    """

    def __init__(self, service: MemoryService, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        from ..server.access import carry  # see _run_direct on why the import is here

        super().__init__(
            "http://agentfield.in-process",
            timeout=timeout,
            # No key: a call runs with the access of its caller's context (full outside a
            # keyed request), like the direct operations below.
            transport=httpx.ASGITransport(app=carry(service.app)),
        )
        self.service = service

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_seconds: float | None = None,
    ) -> Reply:
        op = _DIRECT.get((method.upper(), path))
        if op is None:
            return await super().request(
                method,
                path,
                json=json,
                params=params,
                headers=headers,
                timeout_seconds=timeout_seconds,
            )
        ctx = ExecutionContext.from_headers(dict(headers or {}))
        try:
            return await _run_direct(self.service, op, json, params or {}, ctx)
        except AgentFieldError as exc:
            return Reply(exc.status, exc.to_body())


__all__ = [
    "API_PREFIX",
    "DEFAULT_TIMEOUT",
    "HTTPTransport",
    "InProcessTransport",
    "Reply",
    "Transport",
    "shared_http_transport",
]
