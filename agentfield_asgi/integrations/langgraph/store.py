"""``AgentFieldStore``: LangGraph's ``BaseStore`` on the agentfield-asgi memory service.

A batch is answered in three steps: every read (gets in one ``get_many``, each search
and namespace listing in one request, all concurrently) sees the state before the
batch, as in LangGraph's ``InMemoryStore``; then every put and delete goes in one
``/memory/batch`` request (one transaction; the last put per item wins); then TTLs
read with refresh are renewed in one more batch.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterable
from datetime import datetime
from typing import Any, TypeVar

from langgraph.store.base import (
    BaseStore,
    GetOp,
    IndexConfig,
    Item,
    ListNamespacesOp,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    TTLConfig,
)

from ...client.transports import DEFAULT_TIMEOUT, HTTPTransport, Transport
from ...errors import MemoryAccessError
from ...server.in_process import InProcessTransport
from ...store.base import GLOBAL_SCOPE_ID, SCOPES
from . import namespaces as ns
from . import ttl as ttls
from .client import ScopeCalls
from .listing import list_namespaces
from .search import VECTOR_COUNT, SemanticIndex, prefix_filters

T = TypeVar("T")


def _item(record: dict[str, Any], cls: type[Item] = Item, **extra: Any) -> Item | None:
    parsed = ns.from_key(record["key"])
    if parsed is None or not isinstance(record["data"], dict):
        return None  # another agent's key in the same scope id, not a LangGraph item
    namespace, key = parsed
    return cls(
        value=record["data"],
        key=key,
        namespace=namespace,
        created_at=datetime.fromisoformat(record["created_at"]),
        updated_at=datetime.fromisoformat(record["updated_at"]),
        **extra,
    )


class AgentFieldStore(BaseStore):
    """LangGraph long-term memory kept by an agentfield-asgi memory service.

    ``AgentFieldStore("http://127.0.0.1:8080")`` talks HTTP to a server (its own pooled
    client; close it with :meth:`close` / :meth:`aclose` or ``with`` / ``async with``);
    ``AgentFieldStore(service=memory)`` uses a service in this process. Items live in
    one scope id (``scope``, ``scope_id``; default the global scope) under the key
    ``label/label/.../key`` (see :mod:`.namespaces`). ``index`` enables semantic
    search (LangGraph's ``IndexConfig``), ``ttl`` expiry (LangGraph's ``TTLConfig``,
    minutes). Writes are sent with ``X-Agent-Node-ID: agent_node_id``, so their
    change events name the writer.
    """

    supports_ttl: bool = True

    def __init__(
        self,
        url: str | None = None,
        *,
        api_key: str | None = None,
        index: IndexConfig | None = None,
        ttl: TTLConfig | None = None,
        service: Any = None,
        scope: str = "global",
        scope_id: str | None = None,
        agent_node_id: str | None = "langgraph",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}, not {scope!r}")
        if scope == "global":
            scope_id = GLOBAL_SCOPE_ID
        elif not scope_id:
            raise ValueError(f"the {scope} scope needs a scope_id")
        self.ttl_config = ttl
        self.index_config = index
        self._index = SemanticIndex(index) if index else None
        self._service = service
        self._owner_loop: asyncio.AbstractEventLoop | None = None
        transport: Transport
        if service is not None:
            transport = InProcessTransport(service, timeout=timeout)
            try:  # sync calls must run where the service runs
                self._owner_loop = asyncio.get_running_loop()
            except RuntimeError:
                self._owner_loop = None
        elif url:
            transport = HTTPTransport(url, api_key=api_key, timeout=timeout)
        else:
            raise ValueError("AgentFieldStore needs a server URL or a service")
        self._calls = ScopeCalls(transport, scope, scope_id, agent_node_id)
        self._sync_loop: asyncio.AbstractEventLoop | None = None
        self._sync_thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def scope(self) -> str:
        return self._calls.scope

    # ------------------------------------------------------------ batches

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """Run LangGraph ops: reads first (state before the batch), then writes together."""
        ops = list(ops)
        results: list[Result] = [None] * len(ops)
        puts: dict[str, PutOp] = {}
        gets: dict[int, str] = {}
        reads: dict[int, SearchOp | ListNamespacesOp] = {}
        for i, op in enumerate(ops):  # everything is checked before anything is sent
            if isinstance(op, GetOp):
                gets[i] = ns.to_key(op.namespace, op.key)
            elif isinstance(op, PutOp):
                puts[ns.to_key(op.namespace, op.key)] = op
            elif isinstance(op, SearchOp):
                ns.check_labels(op.namespace_prefix)
                reads[i] = op
            elif isinstance(op, ListNamespacesOp):
                for condition in op.match_conditions or ():
                    ns.check_labels(tuple(p for p in condition.path if p != "*"))
                reads[i] = op
            else:
                raise ValueError(f"unknown operation type: {type(op).__name__}")
        wanted = list(gets.values())
        if self._index is not None:
            wanted.extend(puts)  # their vector counts, to drop vectors a put leaves over
        found, *answers = await asyncio.gather(
            self._calls.get_many(list(dict.fromkeys(wanted))),
            *(
                self._search(op) if isinstance(op, SearchOp) else list_namespaces(self._calls, op)
                for op in reads.values()
            ),
        )
        refresh: dict[str, dict[str, Any]] = {}
        for i, memory_key in gets.items():
            record = found.get(memory_key)
            results[i] = None if record is None else _item(record)
            op = ops[i]
            assert isinstance(op, GetOp)
            if record is not None and ttls.refresh_default(self.ttl_config, op.refresh_ttl):
                refresh[memory_key] = record
        for i, answer in zip(reads, answers, strict=True):
            op = ops[i]
            if not isinstance(op, SearchOp):
                results[i] = answer
                continue
            records, results[i] = answer
            if ttls.refresh_default(self.ttl_config, op.refresh_ttl):
                refresh.update((r["key"], r) for r in records)
        if puts:
            await self._write(puts, found)
        await self._refresh({k: r for k, r in refresh.items() if k not in puts})
        return results

    async def _search(self, op: SearchOp) -> tuple[list[dict[str, Any]], list[SearchItem]]:
        body: dict[str, Any] = {
            "prefix": ns.prefix_of(op.namespace_prefix),
            "filter": op.filter or None,
            "limit": op.limit,
            "offset": op.offset,
        }
        if op.query and self._index is not None:
            body.update(await self._index.query_fields(op.query))
            body.update(prefix_filters(op.namespace_prefix))
        records = await self._calls.query(body)
        items = [_item(r, SearchItem, score=r.get("score")) for r in records]
        return records, [i for i in items if isinstance(i, SearchItem)]

    async def _write(self, puts: dict[str, PutOp], previous: dict[str, dict[str, Any]]) -> None:
        counts: dict[str, int] = {}
        writes: list[dict[str, Any]] = []
        if self._index is not None:  # vectors commit with the values, in the same batch
            writes, counts = await self._index.vector_ops(puts, previous)
        for memory_key, op in puts.items():
            if op.value is None:
                writes.append({"op": "delete", "key": memory_key})
                continue
            fields = ttls.set_fields(ttls.ttl_minutes(self.ttl_config, op.ttl))
            if counts.get(memory_key):
                fields["metadata"] = fields.get("metadata", {}) | {VECTOR_COUNT: counts[memory_key]}
            writes.append({"op": "set", "key": memory_key, "data": dict(op.value), **fields})
        await self._calls.write(writes)

    async def _refresh(self, records: dict[str, dict[str, Any]]) -> None:
        ops = []
        for memory_key, record in records.items():
            minutes = ttls.record_minutes(record)
            if minutes is None:
                continue
            fields = ttls.set_fields(minutes)
            fields["metadata"] = record["metadata"]  # keeps the vector count too
            ops.append(
                {"op": "set", "key": memory_key, "data": record["data"], **fields}
                | {"if_version": record["version"]}
            )
        if not ops:
            return
        try:
            await self._calls.write(ops)
        except MemoryAccessError as exc:
            if exc.status != 412:  # 412: rewritten meanwhile, so already fresh
                raise

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """Synchronous :meth:`abatch` (from any thread but the one running the service)."""
        return self._run_sync(self.abatch(list(ops)))

    # ------------------------------------------------------------ sync plumbing

    def _run_sync(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._service is not None:
            loop = self._owner_loop
            if loop is None or not loop.is_running():
                coro.close()
                raise RuntimeError(
                    "the sync API of an in-process AgentFieldStore needs the store created "
                    "inside the service's running event loop; use the async API there"
                )
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:
                coro.close()
                raise RuntimeError("call the async API (abatch, aget...) on the service's loop")
            return asyncio.run_coroutine_threadsafe(coro, loop).result()
        return asyncio.run_coroutine_threadsafe(coro, self._background_loop()).result()

    def _background_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._sync_loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="agentfield-langgraph-store", daemon=True
                )
                thread.start()
                self._sync_loop, self._sync_thread = loop, thread
            return self._sync_loop

    # ------------------------------------------------------------ lifecycle

    async def aclose(self) -> None:
        """Close the HTTP connections (the store may not be used afterwards)."""
        await self._calls.transport.aclose()
        self._stop_background()

    def close(self) -> None:
        """Close the connections from synchronous code."""
        loop = self._sync_loop
        if loop is not None:
            asyncio.run_coroutine_threadsafe(self._calls.transport.aclose(), loop).result()
        self._stop_background()

    def _stop_background(self) -> None:
        with self._lock:
            loop, thread = self._sync_loop, self._sync_thread
            self._sync_loop = self._sync_thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()

    def __enter__(self) -> AgentFieldStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> AgentFieldStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
