"""The inspector's routes in process: page assets, config, the scopes listing, mounting."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from urllib.parse import urljoin

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from agentfield_asgi.server.app import MemoryService, create_memory_app

ASSETS = {"": "text/html", "app.js": "text/javascript", "style.css": "text/css"}


async def put(client: httpx.AsyncClient, key: str, data: object, **headers: str) -> None:
    response = await client.post(
        "/api/v1/memory/set", json={"key": key, "data": data}, headers=headers
    )
    assert response.status_code == 200, response.text


@pytest.fixture
async def editable(database_url: str) -> AsyncIterator[MemoryService]:
    svc = create_memory_app(database_url, ui_allow_edit=True)
    await svc.start()
    yield svc
    await svc.stop()


async def test_ui_redirects_to_the_folder_relatively(client: httpx.AsyncClient) -> None:
    response = await client.get("/ui")
    assert response.status_code == 307
    assert response.headers["location"] == "ui/"  # relative: stays under any mount prefix


@pytest.mark.parametrize("name", list(ASSETS))
async def test_assets_are_served_with_type_csp_and_etag(
    client: httpx.AsyncClient, name: str
) -> None:
    response = await client.get(f"/ui/{name}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(ASSETS[name])
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"
    etag = response.headers["etag"]
    again = await client.get(f"/ui/{name}", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""


async def test_page_uses_relative_urls_and_nothing_remote(client: httpx.AsyncClient) -> None:
    html = (await client.get("/ui/")).text
    script = (await client.get("/ui/app.js")).text
    css = (await client.get("/ui/style.css")).text
    assert 'src="app.js"' in html and 'href="style.css"' in html
    for text in (html, script, css):
        assert not re.search(r"""(src|href)=["']/""", text), (
            "absolute URL: breaks under a mount prefix"
        )
        assert not re.search(r"https?://", text), "the page must load nothing from elsewhere"
    assert 'const API = "../api/v1";' in script
    assert "<script>" not in html and "style=" not in html  # the CSP forbids inline code and styles


async def test_config_reports_edit_flag(client: httpx.AsyncClient, editable: MemoryService) -> None:
    assert (await client.get("/ui/config.json")).json() == {"allow_edit": False}
    transport = httpx.ASGITransport(app=editable.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://memory") as other:
        assert (await other.get("/ui/config.json")).json() == {"allow_edit": True}


async def test_scopes_lists_scope_ids_with_key_counts(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/v1/memory/scopes")).json() == []
    await put(client, "a", 1, **{"X-Session-ID": "s2"})
    await put(client, "b", 2, **{"X-Session-ID": "s2"})
    await put(client, "a", 3, **{"X-Session-ID": "s1"})
    await put(client, "g", None)
    await put(client, "w", [1], **{"X-Workflow-ID": "wf-1"})
    await put(client, "c", "x", **{"X-Actor-ID": "bot"})
    listed = (await client.get("/api/v1/memory/scopes")).json()
    assert listed == [
        {"scope": "workflow", "scope_id": "wf-1", "keys": 1},
        {"scope": "session", "scope_id": "s1", "keys": 1},
        {"scope": "session", "scope_id": "s2", "keys": 2},
        {"scope": "actor", "scope_id": "bot", "keys": 1},
        {"scope": "global", "scope_id": "global", "keys": 1},
    ]
    sessions = (await client.get("/api/v1/memory/scopes", params={"scope": "session"})).json()
    assert [s["scope_id"] for s in sessions] == ["s1", "s2"]
    assert len((await client.get("/api/v1/memory/scopes", params={"limit": 2})).json()) == 2

    await client.post("/api/v1/memory/delete", json={"key": "a"}, headers={"X-Session-ID": "s1"})
    after = (await client.get("/api/v1/memory/scopes", params={"scope": "session"})).json()
    assert after == [{"scope": "session", "scope_id": "s2", "keys": 2}]


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ({"scope": "planet"}, "invalid_scope"),
        ({"limit": "0"}, "invalid_parameter"),
        ({"limit": "x"}, "invalid_parameter"),
    ],
)
async def test_scopes_rejects_bad_query(
    client: httpx.AsyncClient, query: dict[str, str], code: str
) -> None:
    response = await client.get("/api/v1/memory/scopes", params=query)
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == code and set(body) == {"error", "code", "details"}


async def test_page_works_under_a_mount_prefix(service: MemoryService) -> None:
    host = Starlette(routes=[Mount("/agentfield", app=service.app)])
    transport = httpx.ASGITransport(app=host)
    async with httpx.AsyncClient(transport=transport, base_url="http://host") as client:
        redirect = await client.get("/agentfield/ui")
        page_url = urljoin(str(redirect.url), redirect.headers["location"])
        assert page_url == "http://host/agentfield/ui/"
        assert (await client.get(page_url)).status_code == 200
        for relative in ("app.js", "style.css", "config.json"):
            assert (await client.get(urljoin(page_url, relative))).status_code == 200
        # the API base the script uses, resolved against the page
        await client.post("http://host/agentfield/api/v1/memory/set", json={"key": "k", "data": 1})
        scopes = await client.get(urljoin(page_url, "../api/v1/memory/scopes"))
        assert scopes.json() == [{"scope": "global", "scope_id": "global", "keys": 1}]


async def test_page_needs_no_key_but_its_data_does(database_url: str) -> None:
    svc = create_memory_app(database_url, api_keys=("k-1",))
    await svc.start()
    try:
        transport = httpx.ASGITransport(app=svc.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://memory") as client:
            for path in ("/ui", "/ui/", "/ui/app.js", "/ui/style.css", "/ui/config.json"):
                assert (await client.get(path)).status_code in (200, 307), path
            refused = await client.get("/api/v1/memory/scopes")
            assert refused.status_code == 401 and refused.json()["code"] == "unauthorized"
            # the page's fetches send the header; a query key is for event streams only
            assert (await client.get("/api/v1/memory/scopes?api_key=k-1")).status_code == 401
            allowed = await client.get("/api/v1/memory/scopes", headers={"X-API-Key": "k-1"})
            assert allowed.status_code == 200 and allowed.json() == []
    finally:
        await svc.stop()
