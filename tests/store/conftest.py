"""Storage-level fixtures: an open :class:`Store` on each backend, and a patient wait."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from agentfield_asgi.codec import dumps
from agentfield_asgi.errors import StorageUnavailable
from agentfield_asgi.settings import Settings
from agentfield_asgi.store import Store, open_store
from agentfield_asgi.store.base import SetOp
from agentfield_asgi.store.sqlite import SQLiteStore

WAIT_SECONDS = 60.0
"""How long a test waits for something that happens in the background: generous, since
the machine is shared. Never a speed assertion."""

T = TypeVar("T")
Eventually = Callable[[Callable[[], bool]], Awaitable[None]]


G = ("global", "global")


def put(key: str, value: Any) -> SetOp:
    """A set of ``key`` in the global scope."""
    return SetOp(*G, key, dumps(value))


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    """An open SQLite store with the default settings (synchronous=FULL, a writer process)."""
    s = SQLiteStore(str(tmp_path / "store.db"))
    await s.open()
    yield s
    await s.close()


@pytest.fixture
async def thread_store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    """An open SQLite store whose writer is a thread of this process, for tests that
    reach into the writer (its commit paths, its fsyncs)."""
    s = SQLiteStore(str(tmp_path / "store.db"), writer="thread")
    await s.open()
    yield s
    await s.close()


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    """An open store on a fresh database of the parametrized backend."""
    s = open_store(Settings(database_url=database_url))
    await s.open()
    yield s
    await s.close()


async def _eventually(check: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT_SECONDS):
        while not check():  # noqa: ASYNC110 - polling state that other tasks change
            await asyncio.sleep(0.02)


@pytest.fixture
def eventually() -> Eventually:
    """``await eventually(check)``: wait until ``check()`` holds (fails after WAIT_SECONDS)."""
    return _eventually


async def _until_ok(call: Callable[[], Awaitable[T]]) -> T:
    async with asyncio.timeout(WAIT_SECONDS):
        while True:
            try:
                return await call()
            except StorageUnavailable:
                await asyncio.sleep(0.2)


@pytest.fixture
def until_ok() -> Callable[[Callable[[], Awaitable[T]]], Awaitable[T]]:
    """``await until_ok(call)``: retry ``call()`` while storage is unavailable (it is coming
    back); fails after WAIT_SECONDS."""
    return _until_ok
