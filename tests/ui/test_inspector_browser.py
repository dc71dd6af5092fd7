"""The inspector page in a real headless Chromium against a real ``agentfield-asgi serve``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentfield_asgi.testing import ServerProcess

from .cdp import Page
from .conftest import ARTIFACTS

LIVE_DEADLINE = 1.0  # the promise: a write shows in the open page within a second
WAIT = 30.0  # generous bound for everything else on a busy machine
WORKFLOW = "wf-inspector-demo"


def _q(selector: str, key: str) -> str:
    """JS: the element under ``selector`` whose data-key is ``key`` (or null)."""
    return (
        f"document.querySelector('{selector}[data-key=\"' + CSS.escape({json.dumps(key)}) + '\"]')"
    )


def row(key: str) -> str:
    return _q("#keys tr", key)


def feed_item(key: str) -> str:
    return _q("#feed li", key)


def has(expression: str) -> str:
    """JS: whether ``expression`` (an element lookup) found something."""
    return f"!!({expression})"


def text_of(expression: str) -> str:
    return f"(() => {{ const n = {expression}; return n ? n.innerText : null; }})()"


def write(server: ServerProcess, key: str, data: Any, **headers: str) -> dict[str, Any]:
    response = httpx.post(
        f"{server.url}/api/v1/memory/set",
        json={"key": key, "data": data},
        headers=headers,
        timeout=WAIT,
    )
    response.raise_for_status()
    return dict(response.json())


def open_inspector(page: Page, server: ServerProcess, fragment: str = "") -> None:
    page.goto(f"{server.url}/ui{fragment}")  # /ui redirects to ui/ (relative URLs from there)
    page.wait_for(
        "document.getElementById('status').dataset.state === 'live'",
        timeout=WAIT,
        what="live stream",
    )


def wait_live(page: Page, expression: str, what: str) -> Any:
    """``expression`` must turn truthy within the live deadline, without a reload."""
    value = page.poll(expression, LIVE_DEADLINE)
    assert value, f"{what} did not show within {LIVE_DEADLINE}s\n{page.diagnostics()}"
    return value


def test_live_keys_feed_filter_and_restart(page: Page, database_url: str, backend: str) -> None:
    wf = {"X-Workflow-ID": WORKFLOW, "X-Agent-Node-ID": "triage-agent"}
    server = ServerProcess(["--database-url", database_url]).start()
    try:
        write(server, "ticket_priority", "high", **wf)
        write(server, "cart", {"items": [1, 2]}, **{"X-Session-ID": "user_123"})
        open_inspector(page, server, f"#scope=workflow&id={WORKFLOW}")
        page.wait_for(has(row("ticket_priority")), timeout=WAIT, what="the seeded key")
        assert page.eval("location.pathname").endswith("/ui/")
        scopes = page.eval(
            "[...document.querySelectorAll('.scope-id')]"
            ".map(b => b.innerText.replace(/\\s+/g, ' '))"
        )
        assert f"{WORKFLOW} 1" in scopes and "user_123 1" in scopes
        # read-only by default: no edit controls
        assert page.eval("document.getElementById('mode').innerText") == "read-only"
        assert page.eval("document.querySelectorAll('#keys .row-actions').length") == 0

        # A new key written through the API shows in the list and the feed, highlighted.
        reload_marker = page.eval("window.__loaded = Math.random()")
        write(server, "customer_tier", {"level": "gold", "since": 2021}, **wf)
        wait_live(
            page,
            f"({text_of(row('customer_tier'))} || '').includes('\"gold\"')",
            "the new key's row",
        )
        wait_live(page, has(feed_item("customer_tier")), "the feed item")
        assert page.eval(f"{row('customer_tier')}.classList.contains('flash')")
        assert "triage-agent" in page.eval(text_of(feed_item("customer_tier")))
        page.wait_for(
            f"{row('customer_tier')}.querySelector('.col-version').innerText === '1'", timeout=WAIT
        )

        # An update changes the value in place, highlights it and shows the new version.
        write(server, "ticket_priority", "urgent", **wf)
        wait_live(
            page,
            f"({text_of(row('ticket_priority'))} || '').includes('urgent')",
            "the updated value",
        )
        page.wait_for(
            f"{row('ticket_priority')}.querySelector('.col-version').innerText === '2'",
            timeout=WAIT,
        )
        assert page.eval("window.__loaded") == reload_marker, "the page reloaded"

        # Glob filter: only matching keys are listed, also for keys arriving live.
        page.eval(
            "(() => { const i = document.getElementById('pattern'); i.value = 'customer_*';"
            " i.dispatchEvent(new Event('input')); })()"
        )
        page.wait_for(
            f"!{row('ticket_priority')} && {has(row('customer_tier'))}",
            timeout=WAIT,
            what="filtered list",
        )
        assert "pattern=customer_*" in page.eval("decodeURIComponent(location.hash)")
        write(server, "ticket_status", "open", **wf)
        page.wait_for(
            has(feed_item("ticket_status")), timeout=WAIT, what="filtered-out key in the feed"
        )
        assert page.eval(has(row("ticket_status"))) is False

        # Restart the server: the page says so, then recovers and shows writes made after it.
        server.stop()
        page.wait_for(
            "document.getElementById('status').dataset.state === 'reconnecting'",
            timeout=WAIT,
            what="reconnecting",
        )
        server.start()
        write(server, "customer_after_restart", {"ok": True}, **wf)
        page.wait_for(
            has(feed_item("customer_after_restart")), timeout=WAIT, what="a post-restart event"
        )
        page.wait_for(has(row("customer_after_restart")), timeout=WAIT, what="a post-restart key")
        page.wait_for("document.getElementById('status').dataset.state === 'live'", timeout=WAIT)
        write(server, "customer_later", 1, **wf)
        page.wait_for(has(feed_item("customer_later")), timeout=WAIT, what="events after recovery")
        ids = page.eval(
            "[...document.querySelectorAll('#feed li[data-id]')].map(li => li.dataset.id)"
        )
        assert len(ids) == len(set(ids)), f"duplicate events in the feed: {ids}"
        assert ids == sorted(ids, key=int, reverse=True)
        assert page.eval("window.__loaded") == reload_marker, "the page reloaded"
        assert not page.errors, page.diagnostics()
        time.sleep(0.3)  # let the last highlight start so the screenshot shows it
        page.screenshot(ARTIFACTS / f"inspector-{backend}.png")
    finally:
        server.stop()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_edit_and_delete_when_allowed(page: Page, database_url: str) -> None:
    headers = {"X-Session-ID": "user_9"}
    server = ServerProcess(["--database-url", database_url, "--ui-allow-edit"]).start()
    try:
        write(server, "note", {"text": "draft"}, **headers)
        open_inspector(page, server, "#scope=session&id=user_9")
        page.wait_for(has(row("note")), timeout=WAIT, what="the key")
        assert page.eval("document.getElementById('mode').innerText") == "editing allowed"

        page.eval(f"{row('note')}.querySelector('button.edit').click()")
        page.wait_for("document.getElementById('edit-dialog').open", timeout=WAIT)
        page.eval(
            "document.getElementById('edit-value').value = '{\"text\": \"final\"}';"
            "document.getElementById('edit-submit').click()"
        )
        page.wait_for(
            f"({text_of(row('note'))} || '').includes('final')", timeout=WAIT, what="edited value"
        )
        stored = httpx.post(
            f"{server.url}/api/v1/memory/get", json={"key": "note"}, headers=headers
        ).json()
        assert stored["data"] == {"text": "final"} and stored["version"] == 2

        # The editor writes with compare-and-set: a change made meanwhile is not overwritten.
        page.wait_for(
            f"{row('note')}.querySelector('.col-version').innerText === '2'", timeout=WAIT
        )
        page.eval(f"{row('note')}.querySelector('button.edit').click()")
        write(server, "note", {"text": "someone else"}, **headers)
        page.eval(
            "document.getElementById('edit-value').value = '\"mine\"';"
            "document.getElementById('edit-submit').click()"
        )
        page.wait_for(
            "!document.getElementById('edit-error').hidden", timeout=WAIT, what="conflict message"
        )
        stored = httpx.post(
            f"{server.url}/api/v1/memory/get", json={"key": "note"}, headers=headers
        ).json()
        assert stored["data"] == {"text": "someone else"}
        page.eval("document.getElementById('edit-cancel').click()")

        page.wait_for(
            f"{row('note')}.querySelector('.col-version').innerText === '3'", timeout=WAIT
        )
        page.eval(f"{row('note')}.querySelector('button.delete').click()")
        assert page.dialogs and "note" in page.dialogs[-1]
        page.wait_for(
            f"{row('note')}.classList.contains('deleted')", timeout=WAIT, what="deleted row"
        )
        gone = httpx.post(f"{server.url}/api/v1/memory/get", json={"key": "note"}, headers=headers)
        assert gone.status_code == 404
        assert not page.errors, page.diagnostics()
    finally:
        server.stop()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_api_key_asked_once_and_used_for_data_and_stream(page: Page, database_url: str) -> None:
    key = "inspector-test-key"
    server = ServerProcess(["--database-url", database_url, "--api-key", key]).start()
    try:
        auth = {"X-API-Key": key}
        write(server, "secret_plan", {"step": 1}, **auth)
        page.goto(f"{server.url}/ui/")  # the page itself needs no key
        page.wait_for("document.getElementById('key-dialog').open", timeout=WAIT, what="key dialog")
        assert page.eval("document.getElementById('status').dataset.state") == "key-needed"
        assert (
            page.eval("document.querySelectorAll('.scope-id').length") == 0
        )  # no data without a key

        # A wrong key is refused and asked for again, saying so.
        page.eval(
            "document.getElementById('key-input').value = 'wrong';"
            "document.getElementById('key-submit').click()"
        )
        page.wait_for(
            "document.getElementById('key-dialog').open"
            " && !document.getElementById('key-error').hidden",
            timeout=WAIT,
            what="refused-key message",
        )
        page.eval(
            f"document.getElementById('key-input').value = {json.dumps(key)};"
            "document.getElementById('key-submit').click()"
        )
        page.wait_for(has(row("secret_plan")), timeout=WAIT, what="data after the key")
        page.wait_for("document.getElementById('status').dataset.state === 'live'", timeout=WAIT)
        assert page.eval("sessionStorage.getItem('agentfield-inspector.api-key')") == key
        assert page.eval("document.getElementById('key-dialog').open") is False

        write(server, "secret_next", {"step": 2}, **auth)  # arrives over the keyed stream
        page.wait_for(has(feed_item("secret_next")), timeout=WAIT, what="event over ?api_key=")

        # A reload in the same tab keeps the key: no second prompt.
        page.eval("location.hash = '#scope=global'")
        page.reload()
        page.wait_for(has(row("secret_next")), timeout=WAIT, what="data after reload")
        assert page.eval("document.getElementById('key-dialog').open") is False
        assert not page.errors, page.diagnostics()
    finally:
        server.stop()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_reset_from_a_replaced_database_starts_the_feed_again(
    page: Page, tmp_path: Path, backend: str
) -> None:
    first = ServerProcess(["--database-url", f"sqlite:///{tmp_path / 'first.db'}"]).start()
    port = first.port
    try:
        for n in range(3):
            write(first, f"old_{n}", n)
        open_inspector(page, first, "#scope=global")
        write(first, "old_last", True)
        page.wait_for(has(feed_item("old_last")), timeout=WAIT, what="an event on the first server")
    finally:
        first.stop()
    # Same address, empty database: its event ids start again below the page's last one.
    second = ServerProcess(["--database-url", f"sqlite:///{tmp_path / 'second.db'}"], port=port)
    second.start()
    try:
        page.wait_for(
            "!!document.querySelector('#feed li.notice')", timeout=WAIT, what="the reset notice"
        )
        page.wait_for("document.getElementById('status').dataset.state === 'live'", timeout=WAIT)
        write(second, "fresh", 1)
        page.wait_for(has(feed_item("fresh")), timeout=WAIT, what="new events after the reset")
        page.wait_for(has(row("fresh")), timeout=WAIT, what="the reloaded key list")
        page.wait_for(f"!{row('old_last')}", timeout=WAIT, what="keys of the old database gone")
        assert not page.errors, page.diagnostics()
    finally:
        second.stop()
