"""``memory.app`` is a public, documented class whatever the settings wrap around it,
and it serves requests (mounted by a live host in ``test_app_mount.py``)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

import agentfield_asgi
from agentfield_asgi import MemoryApp, create_memory_app

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.mark.parametrize(
    "options",
    [{}, {"api_keys": ("k",)}, {"cors_origins": ("http://ui.example",)}],
    ids=["plain", "api-keys", "cors"],
)
async def test_memory_app_is_a_public_class(tmp_path: Path, options: dict[str, object]) -> None:
    memory = create_memory_app(f"sqlite:///{tmp_path}/m.db", **options)
    assert type(memory.app) is MemoryApp is agentfield_asgi.MemoryApp
    assert not type(memory.app).__name__.startswith("_")
    assert type(memory.app).__module__.startswith("agentfield_asgi")
    assert memory.app.service is memory
    assert repr(memory.app) == "<MemoryApp storage=sqlite>"
    headers = {"X-API-Key": "k"} if "api_keys" in options else {}
    transport = httpx.ASGITransport(app=memory.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://m") as http:
        r = await http.get("/api/v1/health", headers=headers)
        assert r.status_code == 200
        if "api_keys" in options:  # the checks are still in front of the routes
            assert (await http.get("/api/v1/memory/list?scope=global")).status_code == 401
    await memory.stop()


def test_memory_app_is_documented() -> None:
    assert "agentfield_asgi.MemoryApp" in (DOCS / "mounting.md").read_text()
    assert MemoryApp.__doc__ and "MemoryService.app" in MemoryApp.__doc__
