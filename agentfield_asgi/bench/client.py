"""The client every benchmark call goes through (so ours and the baselines are called alike)."""

from __future__ import annotations

from typing import Any

import httpx

from ..codec import dumps, loads


class BenchClient:
    """Calls the memory routes with one pooled HTTP/1.1 connection set, as the SDK does."""

    def __init__(self, base_url: str) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url,
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=256),
            timeout=30.0,
        )

    async def __aenter__(self) -> BenchClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()

    async def _post(self, path: str, body: dict[str, Any], headers: dict[str, str] | None) -> httpx.Response:
        response = await self._http.post(
            path, content=dumps(body), headers={"content-type": "application/json", **(headers or {})}
        )
        if response.status_code >= 400 and response.status_code != 404:
            raise RuntimeError(f"{path}: {response.status_code} {response.text[:200]}")
        return response

    async def get(self, key: str, *, scope: str | None = None, headers: dict[str, str] | None = None) -> Any:
        body: dict[str, Any] = {"key": key}
        if scope:
            body["scope"] = scope
        response = await self._post("/api/v1/memory/get", body, headers)
        return None if response.status_code == 404 else loads(response.content)["data"]

    async def set(self, key: str, data: Any, *, scope: str | None = None, headers: dict[str, str] | None = None) -> None:
        body: dict[str, Any] = {"key": key, "data": data}
        if scope:
            body["scope"] = scope
        await self._post("/api/v1/memory/set", body, headers)

    async def delete(self, key: str, *, scope: str | None = None, headers: dict[str, str] | None = None) -> None:
        body: dict[str, Any] = {"key": key}
        if scope:
            body["scope"] = scope
        await self._post("/api/v1/memory/delete", body, headers)

    async def list_keys(self, scope: str, *, headers: dict[str, str] | None = None) -> list[str]:
        response = await self._http.get("/api/v1/memory/list", params={"scope": scope}, headers=headers)
        return [item["key"] for item in loads(response.content)]
