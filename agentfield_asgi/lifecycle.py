"""Starting a component once, whoever asks first: the host's lifespan or, when a
mounted app's lifespan never runs, its first request (many may arrive together)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, Protocol


class StartOnce:
    """Runs a start function once, however many callers race to start."""

    def __init__(self) -> None:
        self.started = False
        self._lock: asyncio.Lock | None = None

    async def run(self, start: Callable[[], Awaitable[None]]) -> None:
        if self.started:
            return
        async with self._get_lock():
            if not self.started:
                await start()
                self.started = True

    async def stop(self, stop: Callable[[], Awaitable[None]]) -> None:
        """Run ``stop`` if started, under the same lock: a start racing it waits for it."""
        if not self.started:
            return
        async with self._get_lock():
            if self.started:
                self.started = False
                await stop()

    def _get_lock(self) -> asyncio.Lock:
        # Created on first use: the component may be built before any event loop runs.
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock


async def run_hooks(hooks: Iterable[Callable[[], Any]]) -> None:
    """Call each hook in order, awaiting those that return an awaitable."""
    for hook in hooks:
        result = hook()
        if inspect.isawaitable(result):
            await result


class Startable(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@contextlib.asynccontextmanager
async def running(component: Startable) -> AsyncIterator[None]:
    """A lifespan for ``component``: start it, then stop it (what a host composes)."""
    await component.start()
    try:
        yield
    finally:
        await component.stop()
