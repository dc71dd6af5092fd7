"""Background purge of expired keys (the TTL extension).

Reads never return an expired record (every query filters on ``expires_us``), so
expiry is visible at once; this task only removes the rows, each with a ``delete``
event whose metadata carries ``"expired": true`` (added by the store for
``DeleteOp(expired_only=True)``). ``expired_only`` makes the purge safe against a
concurrent ``set`` that revived the key, and against other instances purging too.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from ..codec import now_us
from ..store.base import DeleteOp, Store

if TYPE_CHECKING:
    from .app import MemoryService

log = logging.getLogger("agentfield_asgi.ttl")

PURGE_BATCH = 500
EXPIRY_EVENT_METADATA = {"agent_id": None, "actor_id": None, "workflow_id": None}


async def purge_expired(store: Store, *, batch: int = PURGE_BATCH) -> int:
    """Remove every record expired by now, ``batch`` per transaction; returns how many."""
    removed = 0
    while True:
        expired = await store.expired_keys(now_us(), batch)
        if not expired:
            return removed
        ops = [
            DeleteOp(s, sid, k, dict(EXPIRY_EVENT_METADATA), expired_only=True)
            for s, sid, k in expired
        ]
        results = await store.write(ops)
        removed += sum(r is not None for r in results)
        if len(expired) < batch:
            return removed


async def _purge_forever(service: MemoryService) -> None:
    interval = service.settings.ttl_purge_interval_seconds
    while True:
        await asyncio.sleep(interval)
        try:
            await purge_expired(service.store)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # storage outage: try again next round
            log.warning("TTL purge failed (will retry): %s", exc)


def start_purger(service: MemoryService) -> None:
    """Run the purger for the life of the service (an ``on_start`` hook)."""
    if service.settings.ttl_purge_interval_seconds > 0:
        service.spawn(_purge_forever(service))
