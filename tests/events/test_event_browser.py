"""A real browser's ``EventSource`` on a page of another origin: the API key in the query,
CORS, and no event lost or repeated when the server restarts under it."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from ui.cdp import Browser, Page, find_chromium

from agentfield_asgi.testing import free_port

WAIT = 60.0
KEY = "browser-key"


@pytest.fixture
def page() -> Iterator[Page]:
    executable = find_chromium()
    if executable is None:
        pytest.fail("this test needs Chromium: `apt-get install -y chromium` (nox -s tests does)")
    browser = Browser(executable, Path(tempfile.mkdtemp()) / "chromium.log").start()
    try:
        tab = browser.new_page()
        yield tab
    finally:
        browser.close()


def test_event_source_from_another_origin_survives_a_restart(make_server, page: Page) -> None:
    port = free_port()
    page_origin = f"http://localhost:{port}"  # another origin than 127.0.0.1:port
    server = make_server(port=port, args=("--api-key", KEY, "--cors-origin", page_origin))
    headers = {"X-API-Key": KEY}

    def put(key: str) -> None:
        response = httpx.post(
            f"{server.url}/api/v1/memory/set", json={"key": key, "data": key}, headers=headers
        )
        assert response.status_code == 200, response.text

    page.goto(f"{page_origin}/api/v1/health")
    page.eval(
        f"""(() => {{
        window.got = []; window.opened = 0;
        const es = new EventSource(
            "{server.url}/api/v1/memory/events/sse?patterns=k*&api_key={KEY}");
        es.onopen = () => {{ window.opened += 1; }};
        es.onmessage = (e) => {{ window.got.push([e.lastEventId, JSON.parse(e.data).key]); }};
        }})()"""
    )
    page.wait_for("window.opened === 1", timeout=WAIT, what="the stream to open")
    put("k1")
    put("other")
    put("k2")
    page.wait_for("window.got.length === 2", timeout=WAIT, what="two events")
    server.stop()  # the stream ends; the browser reconnects by itself with Last-Event-ID
    server = make_server(port=port, args=("--api-key", KEY, "--cors-origin", page_origin))
    for key in ("k3", "k4", "k5"):
        put(key)
    page.wait_for("window.got.length >= 5 && window.opened >= 2", timeout=WAIT, what="resume")
    got = page.eval("window.got")
    assert [key for _, key in got] == ["k1", "k2", "k3", "k4", "k5"]
    ids = [int(event_id) for event_id, _ in got]
    assert ids == sorted(set(ids))
