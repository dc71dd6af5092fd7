"""Fixtures for the inspector's browser tests: a headless system Chromium driven over CDP."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from .cdp import Browser, Page, find_chromium

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's ``chromium``, headless. Missing is a failure, never a skip (CI must catch it)."""
    executable = find_chromium()
    if executable is None:
        pytest.fail(
            "the inspector's browser tests need Chromium: `apt-get install -y chromium` "
            "(nox -s tests installs it), or set CHROMIUM=/path/to/chrome"
        )
    ARTIFACTS.mkdir(exist_ok=True)
    instance = Browser(executable, ARTIFACTS / "chromium.log").start()
    yield instance
    instance.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


_FAILED = pytest.StashKey[bool]()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh tab; on failure its screenshot goes to test-artifacts/ for a look."""
    tab = browser.new_page()
    yield tab
    name = re.sub(r"[^\w.-]+", "_", request.node.name)
    shot = ARTIFACTS / f"failed-{name}.png"
    shot.unlink(missing_ok=True)  # never leave an old failure's picture next to a pass
    if request.node.stash.get(_FAILED, False):
        try:
            tab.screenshot(shot)
        except Exception:  # the browser may be what failed
            pass
    tab.close()
