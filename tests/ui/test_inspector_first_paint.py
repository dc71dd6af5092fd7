"""What a newcomer sees when the inspector opens on a service that already has history:
the last changes (marked as earlier than the live ones, which follow without a gap),
whole scope ids on every feed row, and a filter box whose hint is not cut off by a long
scope title. Real headless Chromium against a real ``agentfield-asgi serve``."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from agentfield_asgi.testing import ServerProcess

from .cdp import Page
from .conftest import ARTIFACTS
from .test_inspector_browser import WAIT, feed_item, has, open_inspector, wait_live, write

LONG_WORKFLOW = "wf-" + "0123456789abcdef" * 4
LONG_SESSION = "customer-" + "very-long-session-identifier-" * 3

# Every feed row's scope button shows its whole text (nothing clipped) and says it in full.
WHERE_ROWS = """[...document.querySelectorAll('#feed li[data-id]')].map(li => {
  const b = li.querySelector('.where');
  return [li.dataset.scope, li.dataset.scopeId, b.innerText, b.title,
          b.scrollWidth <= b.clientWidth + 1];
})"""

# The room inside the filter box against the width its placeholder needs, in pixels.
PLACEHOLDER_ROOM = """(() => {
  const input = document.getElementById('pattern');
  const style = getComputedStyle(input);
  const ctx = document.createElement('canvas').getContext('2d');
  ctx.font = `${style.fontStyle} ${style.fontWeight} ${style.fontSize} ${style.fontFamily}`;
  const need = ctx.measureText(input.placeholder).width;
  const room = input.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  return [need, room];
})()"""


def feed_rows(page: Page) -> list[list[str]]:
    """``[class, data-id]`` of each feed row, top (newest) first."""
    rows = page.eval(
        "[...document.querySelectorAll('#feed li')].map(li => [li.className, li.dataset.id || ''])"
    )
    return [[cls.replace("flash", "").strip(), id_] for cls, id_ in rows]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_first_paint_shows_history_then_live_changes(page: Page, database_url: str) -> None:
    server = ServerProcess(["--database-url", database_url]).start()
    try:
        for n in range(60):
            headers = {"X-Workflow-ID": LONG_WORKFLOW} if n % 2 else {"X-Session-ID": LONG_SESSION}
            write(server, f"old_{n}", n, **headers)
        history = httpx.get(
            f"{server.url}/api/v1/memory/events/history", params={"limit": 50}, timeout=WAIT
        ).json()
        expected = [event["id"] for event in reversed(history)]  # newest first, as shown

        open_inspector(page, server, f"#scope=session&id={LONG_SESSION}")
        page.wait_for(has(feed_item("old_59")), timeout=WAIT, what="the earlier changes")
        rows = feed_rows(page)
        assert rows[0] == ["earlier-mark", ""]
        assert "the last 50 changes before this page opened" in page.eval(
            "document.querySelector('#feed .earlier-mark').innerText"
        )
        assert rows[1:] == [["event set earlier", id_] for id_ in expected]
        assert not page.eval(has(feed_item("old_9")))  # older than the last 50

        # Live changes go above the mark, unmarked, and none is lost or shown twice.
        write(server, "live_1", "now", **{"X-Workflow-ID": LONG_WORKFLOW})
        wait_live(page, has(feed_item("live_1")), "a live change after the history")
        rows = feed_rows(page)
        assert rows[0][0] == "event set" and rows[1] == ["earlier-mark", ""]
        ids = [int(id_) for _, id_ in rows if id_]
        assert ids == sorted(set(ids), reverse=True)
        assert ids[0] == int(expected[0]) + 1

        for scope, scope_id, text, title, whole in page.eval(WHERE_ROWS):
            assert text == title == f"{scope} {scope_id}"
            assert whole, f"{scope} {scope_id} is clipped"

        need, room = page.eval(PLACEHOLDER_ROOM)
        assert room >= need, f"the filter's placeholder needs {need}px, has {room}px"
        assert not page.errors, page.diagnostics()
        page.screenshot(ARTIFACTS / "inspector-first-paint.png")
    finally:
        server.stop()


def test_first_paint_of_an_empty_service_has_no_mark(page: Page, tmp_path: Path) -> None:
    server = ServerProcess(["--database-url", f"sqlite:///{tmp_path / 'm.db'}"]).start()
    try:
        open_inspector(page, server)
        write(server, "first", 1)
        wait_live(page, has(feed_item("first")), "the first change")
        assert [cls for cls, _ in feed_rows(page)] == ["event set"]
        assert not page.errors, page.diagnostics()
    finally:
        server.stop()
