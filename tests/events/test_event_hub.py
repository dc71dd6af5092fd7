"""EventHub in process, on both backends: pattern and scope matching, bounded queues,
resume from the log, resets, limits, shutdown, and no leaked registrations."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from agentfield_asgi import events as events_module
from agentfield_asgi.events import CLOSED, OVERFLOW, EventHub, EventStream, Reset, SubscriberLimit
from agentfield_asgi.patterns import InvalidPattern
from agentfield_asgi.server.app import MemoryService, create_memory_app
from agentfield_asgi.store.base import Event, EventFilter, SetOp

from .streams import wait_until

KEYS = [
    "customer_1",
    "customer_22",
    "customers",
    "cust",
    "order_1",
    "order_a",
    "order_ab",
    "a*b",
    "axb",
    "user.prefs",
]


async def put(
    service: MemoryService, key: str, data: Any = 1, scope: str = "global", scope_id: str = "global"
) -> int:
    await service.store.set(SetOp(scope, scope_id, key, str(data).encode()))
    return await service.store.last_event_id()  # the id of this write (tests write one at a time)


async def delivered(service: MemoryService, event_id: int) -> None:
    """Wait until the hub dispatched ``event_id`` (SQLite: at once; PostgreSQL: after NOTIFY)."""
    await wait_until(lambda: service.hub.last_id >= event_id, f"event {event_id} dispatched")


def queued(stream: EventStream) -> list[Any]:
    queue = stream.subscription.queue
    return [queue.get_nowait() for _ in range(queue.qsize())]


async def take(stream: EventStream, count: int) -> list[Any]:
    """The next ``count`` items from a stream (markers and resets included)."""
    out: list[Any] = []
    iterator = aiter(stream)
    while len(out) < count:
        out.append(await anext(iterator))
    return out


@pytest.fixture
async def small_service(database_url: str) -> AsyncIterator[MemoryService]:
    svc = create_memory_app(database_url, subscriber_queue_size=16, max_subscribers_per_client=2)
    await svc.start()
    yield svc
    await svc.stop()


@pytest.mark.parametrize(
    ("patterns", "expected"),
    [
        (("customer_*",), ["customer_1", "customer_22"]),
        (("order_?",), ["order_1", "order_a"]),
        (("order_[0-9]",), ["order_1"]),
        (("order_[!0-9]",), ["order_a"]),
        (("order_[^0-9]*",), ["order_a", "order_ab"]),
        (("customer_?", "order_a?"), ["customer_1", "order_ab"]),
        (("a[*]b",), ["a*b"]),
        (("a*b",), ["a*b", "axb"]),
        (("user.prefs",), ["user.prefs"]),
        (("user?prefs", "cust"), ["cust", "user.prefs"]),
        ((), KEYS),
    ],
)
async def test_patterns_match_keys_live_and_in_history(
    service: MemoryService, patterns: tuple[str, ...], expected: list[str]
) -> None:
    flt = EventFilter(patterns)
    async with service.hub.stream(flt) as stream:
        for key in KEYS:
            last = await put(service, key)
        await delivered(service, last)
        live = [e.key for e in queued(stream)]
    assert live == expected
    # The SQL side (history) reads the same patterns the same way.
    history = await service.store.history(flt, since_us=None, since_id=None, limit=100)
    assert [e.key for e in history] == expected


async def test_scope_and_scope_id_filters(service: MemoryService) -> None:
    hub = service.hub
    streams = {
        "session": hub.stream(EventFilter(scope="session")),
        "session u1": hub.stream(EventFilter(scope="session", scope_id="u1")),
        "temp in u1": hub.stream(EventFilter(("temp_*",), scope="session", scope_id="u1")),
        "global": hub.stream(EventFilter(scope="global")),
    }
    writes = [
        ("session", "u1", "temp_cart"),
        ("session", "u1", "name"),
        ("session", "u2", "temp_cart"),
        ("actor", "u1", "temp_x"),
        ("global", "global", "temp_y"),
    ]
    for scope, scope_id, key in writes:
        last = await put(service, key, scope=scope, scope_id=scope_id)
    await delivered(service, last)
    got = {name: [(e.scope, e.scope_id, e.key) for e in queued(s)] for name, s in streams.items()}
    for stream in streams.values():
        stream.close()
    assert got == {
        "session": [
            ("session", "u1", "temp_cart"),
            ("session", "u1", "name"),
            ("session", "u2", "temp_cart"),
        ],
        "session u1": [("session", "u1", "temp_cart"), ("session", "u1", "name")],
        "temp in u1": [("session", "u1", "temp_cart")],
        "global": [("global", "global", "temp_y")],
    }
    assert hub.subscriber_count == 0


async def test_invalid_pattern_is_refused_before_registering(service: MemoryService) -> None:
    with pytest.raises(InvalidPattern):
        service.hub.stream(EventFilter(("order_[abc",)))
    assert service.hub.subscriber_count == 0


async def test_slow_subscriber_is_cut_off_and_others_are_unaffected(
    small_service: MemoryService,
) -> None:
    hub = small_service.hub
    slow = hub.stream(EventFilter())
    fast = hub.stream(EventFilter())
    await fast.open()  # fixes its start before the writes below
    got: list[int] = []
    iterator = aiter(fast)
    for batch in range(10):
        for i in range(10):
            await put(small_service, f"k{batch}_{i}", i)
        last = await small_service.store.last_event_id()
        await delivered(small_service, last)
        while not got or got[-1] < last:
            item = await anext(iterator)
            assert isinstance(item, Event), item
            got.append(item.id)
    # The slow one never read: its queue overflowed (bounded at 16) and it was dropped.
    assert queued(slow) == [OVERFLOW]
    assert slow.subscription.closed
    assert len(got) == 100 and got == sorted(set(got))
    assert hub.subscriber_count == 1
    fast.close()
    slow.close()
    assert hub.subscriber_count == 0


async def test_resume_replays_from_log_then_goes_live_each_once_in_order(
    service: MemoryService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events_module, "LOG_PAGE", 7)  # several log pages
    ids = [await put(service, f"before_{i}", i) for i in range(40)]
    await delivered(service, ids[-1])
    async with service.hub.stream(EventFilter(), after_id=ids[9]) as stream:
        iterator = aiter(stream)
        got = [await anext(iterator)]
        # Writes land while the stream is still reading the log: each must come once.
        ids += [await put(service, f"during_{i}", i) for i in range(20)]
        while got[-1].id < ids[-1]:
            got.append(await anext(iterator))
        ids += [await put(service, f"after_{i}", i) for i in range(5)]
        while got[-1].id < ids[-1]:
            got.append(await anext(iterator))
        assert service.hub.subscriber_count == 1
    assert [e.id for e in got] == ids[10:]
    assert service.hub.subscriber_count == 0


async def test_resume_with_filter_skips_other_keys(service: MemoryService) -> None:
    for i in range(10):
        await put(service, f"a_{i}")
        await put(service, f"b_{i}")
    await delivered(service, 20)
    async with service.hub.stream(EventFilter(("b_*",)), after_id=10) as stream:
        got = await take(stream, 5)
        await put(service, "a_live")
        last = await put(service, "b_live")
        got += await take(stream, 1)
    assert [e.key for e in got] == ["b_5", "b_6", "b_7", "b_8", "b_9", "b_live"]
    assert got[-1].id == last


async def test_reset_when_resume_point_was_compacted(service: MemoryService) -> None:
    for i in range(20):
        last = await put(service, f"k{i}", i)
    await delivered(service, last)
    removed = await service.store.compact(max_age_seconds=None, max_events=5)
    assert removed == 15
    through = await service.store.compacted_through()
    assert through == last - 5
    async with service.hub.stream(EventFilter(), after_id=3) as stream:
        items = await take(stream, 6)
    assert items[0] == Reset("compacted", through)
    assert [e.id for e in items[1:]] == list(range(through + 1, last + 1))
    # A resume point inside retention gets no reset.
    async with service.hub.stream(EventFilter(), after_id=through) as stream:
        items = await take(stream, 1)
    assert items[0].id == through + 1


async def test_reset_when_resume_point_is_newer_than_the_log(service: MemoryService) -> None:
    last = await put(service, "k")
    await delivered(service, last)
    async with service.hub.stream(EventFilter(), after_id=last + 1000) as stream:
        first = await take(stream, 1)
        following = await put(service, "k2")
        second = await take(stream, 1)
    assert first == [Reset("unknown_id", last)]
    assert second[0].id == following


async def test_per_client_limit(small_service: MemoryService) -> None:
    hub = small_service.hub
    a = hub.stream(EventFilter(), client="c1")
    b = hub.stream(EventFilter(), client="c1")
    with pytest.raises(SubscriberLimit) as info:
        hub.stream(EventFilter(), client="c1")
    assert info.value.status == 429
    other = hub.stream(EventFilter(), client="c2")  # another client is not affected
    a.close()
    c = hub.stream(EventFilter(), client="c1")  # a slot was freed
    for s in (b, c, other):
        s.close()
    assert hub.subscriber_count == 0
    assert hub._per_client == {}


async def test_stop_ends_every_stream(database_url: str) -> None:
    svc = create_memory_app(database_url)
    await svc.start()
    live = svc.hub.stream(EventFilter())
    resuming = svc.hub.stream(EventFilter(), after_id=0)
    await svc.stop()
    assert svc.hub.subscriber_count == 0
    assert await take(live, 1) == [CLOSED]
    assert await take(resuming, 1) == [CLOSED]
    late = EventHub(svc.store).stream(EventFilter())  # a hub that is not running
    assert await take(late, 1) == [CLOSED]


async def test_closing_an_unstarted_stream_releases_it(service: MemoryService) -> None:
    stream = service.hub.stream(EventFilter(), after_id=0, client="c")
    assert service.hub.subscriber_count == 1
    stream.close()
    stream.close()  # idempotent
    assert service.hub.subscriber_count == 0


async def test_background_compaction_applies_retention(database_url: str) -> None:
    svc = create_memory_app(database_url, event_retention_count=5, compaction_interval_seconds=0.05)
    await svc.start()
    try:
        for i in range(30):
            last = await put(svc, f"k{i}", i)

        async def compacted() -> bool:
            return await svc.store.compacted_through() == last - 5

        await wait_until(compacted, "background compaction")
        remaining = await svc.store.events_after(0, 100)
        assert [e.id for e in remaining] == list(range(last - 4, last + 1))
    finally:
        await svc.stop()
