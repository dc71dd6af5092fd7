"""The newcomer's path: a server, the inspector open, the two example agents at work."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from agentfield_asgi.testing import ServerProcess, agent_server

from .cdp import Page
from .conftest import ARTIFACTS
from .test_inspector_browser import WAIT, has, open_inspector

ROOT = Path(__file__).resolve().parents[2]


def feed_has(key: str, action: str, scope: str, agent: str | None = None) -> str:
    selector = f"#feed li.{action}[data-key='{key}'][data-scope='{scope}']"
    check = f"document.querySelector({selector!r})"
    if agent is not None:
        check = f"({check} && {check}.innerText.includes({agent!r}))"
    return has(check)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_watch_the_support_example_change_memory_live(page: Page, database_url: str) -> None:
    with ServerProcess(["--database-url", database_url]) as control_plane:
        open_inspector(page, control_plane)
        node = "examples.support.{}:app"
        with (
            agent_server(node.format("specialist_agent"), control_plane.url, cwd=str(ROOT)),
            agent_server(node.format("support_agent"), control_plane.url, cwd=str(ROOT)),
        ):
            reply = httpx.post(
                f"{control_plane.url}/api/v1/execute/support-agent.handle_ticket",
                json={"input": {"ticket_id": "T-1", "text": "I was charged twice for my invoice"}},
                headers={"X-Session-ID": "customer-42"},
                timeout=WAIT,
            )
            reply.raise_for_status()
            workflow = reply.json()["workflow_id"]
        # Shared workflow memory written by one node, then removed when the workflow ends;
        # the customer's session memory stays.
        for key in ("ticket_priority", "ticket_category"):
            page.wait_for(feed_has(key, "set", "workflow", "support-agent"), timeout=WAIT, what=key)
            page.wait_for(feed_has(key, "delete", "workflow"), timeout=WAIT, what=f"{key} removed")
        page.wait_for(feed_has("tickets", "set", "session", "support-agent"), timeout=WAIT)
        item = "document.querySelector(\"#feed li[data-key='ticket_priority']\")"
        assert page.eval(f"{item}.dataset.scopeId") == workflow
        page.eval("document.querySelector(\".scope-id[data-scope-id='customer-42']\").click()")
        page.wait_for(
            "(document.querySelector(\"#keys tr[data-key='tickets']\") || {}).innerText"
            "?.includes('T-1')",
            timeout=WAIT,
            what="the session's ticket list",
        )
        assert not page.errors, page.diagnostics()
        page.screenshot(ARTIFACTS / "inspector-support-example.png")
