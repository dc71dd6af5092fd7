"""The HTTP transport: JSON over HTTP with one pooled ``httpx.AsyncClient`` per process
and base URL (:func:`shared_http_transport` hands out the same instance), context headers
injected on every request, configurable timeouts, ``X-API-Key``; change events from
``GET /api/v1/memory/events/sse`` (:class:`SSEReader`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

import httpx

from ... import tracing
from ...codec import JSONDecodeError, dumps, loads
from ...context import HEADER_API_KEY
from ...middleware import apply_context
from ..change_events import Filter, MemoryChangeEvent, StreamReset
from .base import (
    API_PREFIX,
    DEFAULT_TIMEOUT,
    EventItem,
    EventSource,
    Reply,
    StreamRefused,
    Transport,
)

SSE_PATH = f"{API_PREFIX}/memory/events/sse"


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

    def event_source(self, read_timeout: float) -> SSEReader:
        return SSEReader(self.base_url, self.api_key, read_timeout)

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


class SSEReader(EventSource):
    """``GET /api/v1/memory/events/sse`` over HTTP, on connections of its own."""

    def __init__(self, base_url: str, api_key: str | None, read_timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = httpx.Timeout(10.0, read=read_timeout)
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None or self._client.is_closed:
            # Own connections: a long-lived stream must not hold one of the request pool's.
            self._client = httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout)
        return self._client

    async def open(
        self, flt: Filter, after: int | None, headers: Mapping[str, str]
    ) -> AsyncGenerator[EventItem, None]:
        send = {**headers, "Accept": "text/event-stream"}
        if self.api_key:
            send[HEADER_API_KEY] = self.api_key
        if after is not None:
            send["Last-Event-ID"] = str(after)
        async with self._http().stream("GET", SSE_PATH, params=flt.params(), headers=send) as r:
            if r.status_code != 200:
                await r.aread()
                error = Reply(r.status_code, _json_or_none(r.content)).access_error()
                if r.status_code in (400, 401, 403, 404):
                    raise StreamRefused(error)
                raise error
            async for item in parse_sse(r.aiter_lines()):
                yield item

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


async def parse_sse(lines: AsyncIterator[str]) -> AsyncIterator[EventItem]:
    """SSE frames -> items (the text/event-stream rules: ``data`` lines join with newlines,
    a blank line ends a frame, ``:`` starts a comment)."""
    event = "message"
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                body = loads("\n".join(data))
                if event == "message":
                    yield MemoryChangeEvent.from_dict(body)
                elif event == "reset":
                    yield StreamReset(str(body.get("reason")), str(body.get("resume_from")))
            event, data = "message", []
            continue
        if line.startswith(":"):
            if line[1:].strip() == "connected":
                yield "connected"
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value


def _json_or_none(content: bytes) -> Any:
    try:
        return loads(content) if content else None
    except ValueError:
        return None


__all__ = [
    "API_PREFIX",
    "DEFAULT_TIMEOUT",
    "HTTPTransport",
    "Reply",
    "SSEReader",
    "Transport",
    "shared_http_transport",
]
