"""Starting a component once, whoever asks first: the host's lifespan or, when a
mounted app's lifespan never runs, its first request (many may arrive together)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Iterable
from typing import Any


class StartOnce:
    """Runs a start function once, however many callers race to start."""

    def __init__(self) -> None:
        self.started = False
        self._lock: asyncio.Lock | None = None

    async def run(self, start: Callable[[], Awaitable[None]]) -> None:
        if self.started:
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if not self.started:
                await start()
                self.started = True


async def run_hooks(hooks: Iterable[Callable[[], Any]]) -> None:
    """Call each hook in order, awaiting those that return an awaitable."""
    for hook in hooks:
        result = hook()
        if inspect.isawaitable(result):
            await result
