"""Waiting for something that happens in the background, patiently (the test machine is
shared and slow): a failed wait is a failure, never a speed assertion."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

WAIT_SECONDS = 60.0


async def wait_until(
    predicate: Callable[[], Any],
    message: str = "condition not met",
    within: float = WAIT_SECONDS,
    interval: float = 0.02,
) -> None:
    """Poll ``predicate`` (sync or async) until it is truthy; after ``within`` seconds
    raise ``AssertionError`` with ``message``."""
    deadline = time.monotonic() + within
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:.0f}s: {message}")
        await asyncio.sleep(interval)
