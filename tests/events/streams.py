"""Test helpers: a minimal raw SSE reader (independent of the SDK's parser, so tests check
the wire format itself), writers, and waits with generous timeouts (never timing asserts)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from agentfield_asgi.testing.waits import WAIT_SECONDS, wait_until

WAIT = WAIT_SECONDS
"""Seconds before a wait gives up: generous, the machine is shared and slow."""


@dataclass
class Frame:
    """One SSE frame as it came off the wire."""

    event: str | None = None
    id: str | None = None
    data: str | None = None
    comments: list[str] = field(default_factory=list)

    def json(self) -> Any:
        return orjson.loads(self.data or "null")


class SSEReader:
    """``async with SSEReader(client, url, ...) as sse``: frames one at a time."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        url: str,
        *,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self._cm = client.stream("GET", url, params=params, headers=headers)
        self.response: httpx.Response | None = None
        self._lines: Any = None

    async def __aenter__(self) -> SSEReader:
        self.response = await self._cm.__aenter__()
        self._lines = self.response.aiter_lines()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._cm.__aexit__(*exc)

    async def frame(self, within: float = WAIT) -> Frame | None:
        """The next frame, or None when the server ended the stream."""
        return await asyncio.wait_for(self._frame(), within)

    async def _frame(self) -> Frame | None:
        frame, seen = Frame(), False
        async for line in self._lines:
            if line == "":
                if seen:
                    return frame
                continue
            seen = True
            if line.startswith(":"):
                frame.comments.append(line[1:].strip())
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data":
                frame.data = value if frame.data is None else frame.data + "\n" + value
            elif name in ("id", "event"):
                setattr(frame, name, value)
        return None

    async def events(self, count: int, within: float = WAIT) -> list[dict[str, Any]]:
        """The next ``count`` ``message`` events' JSON (skips comments)."""
        out: list[dict[str, Any]] = []
        while len(out) < count:
            frame = await self.frame(within)
            assert frame is not None, f"stream ended after {len(out)} of {count} events"
            if frame.event == "message":
                assert frame.id == frame.json()["id"]
                out.append(frame.json())
        return out

    async def rest(self, within: float = WAIT) -> list[Frame]:
        """Every frame until the server ends the stream."""
        out = []
        while (frame := await self.frame(within)) is not None:
            out.append(frame)
        return out


async def write(
    client: httpx.AsyncClient,
    base: str,
    key: str,
    data: Any,
    *,
    scope: str | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"key": key, "data": data}
    if scope:
        body["scope"] = scope
    response = await client.post(f"{base}/api/v1/memory/set", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def delete(client: httpx.AsyncClient, base: str, key: str) -> None:
    response = await client.post(f"{base}/api/v1/memory/delete", json={"key": key})
    assert response.status_code == 204, response.text


async def newest_id(client: httpx.AsyncClient, base: str) -> int:
    response = await client.get(f"{base}/api/v1/memory/events/history", params={"limit": 1})
    assert response.status_code == 200, response.text
    items = response.json()
    return int(items[-1]["id"]) if items else 0


async def subscribers(client: httpx.AsyncClient, base: str) -> int:
    return int((await client.get(f"{base}/api/v1/health")).json()["subscribers"])


async def wait_subscribers(client: httpx.AsyncClient, base: str, count: int) -> None:
    async def check() -> bool:
        return await subscribers(client, base) == count

    await wait_until(check, f"{count} registered subscribers")


__all__ = [
    "WAIT",
    "Frame",
    "SSEReader",
    "delete",
    "newest_id",
    "subscribers",
    "wait_until",
    "write",
]
