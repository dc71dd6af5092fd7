"""TTL: an expired key is invisible to every read at once, then purged with a delete event
whose metadata says it expired."""

from __future__ import annotations

from agentfield_asgi.codec import now_us
from agentfield_asgi.server.ttl import purge_expired

from .conftest import ServiceFactory
from .helpers import API, every_event, http_client, wait_until

WF = {"X-Workflow-ID": "wf-ttl"}


async def test_expired_key_is_invisible_at_once(make_service: ServiceFactory) -> None:
    # No purger: the row is still stored, yet no read may return it.
    async with (
        make_service(ttl_purge_interval_seconds=0) as service,
        http_client(service) as client,
    ):
        await client.post(f"{API}/set", json={"key": "k", "data": "global"})
        r = await client.post(
            f"{API}/set", json={"key": "k", "data": "short", "ttl_seconds": 0.3}, headers=WF
        )
        assert r.status_code == 200 and "expires_at" in r.json()
        assert (await client.post(f"{API}/get", json={"key": "k"}, headers=WF)).json()[
            "data"
        ] == "short"
        expires_us = now_us() + 300_000
        await wait_until(lambda: _passed(expires_us))
        assert await service.store.expired_keys(now_us(), 10) == [("workflow", "wf-ttl", "k")]

        got = await client.post(f"{API}/get", json={"key": "k"}, headers=WF)
        assert got.json()["data"] == "global"  # the hierarchy falls through to the next scope
        scoped = await client.post(f"{API}/get", json={"key": "k", "scope": "workflow"}, headers=WF)
        assert scoped.status_code == 404
        many = await client.post(
            f"{API}/get_many", json={"keys": ["k"], "scope": "workflow"}, headers=WF
        )
        assert many.json()["missing"] == ["k"]
        listed = await client.get(f"{API}/list", params={"scope": "workflow"}, headers=WF)
        assert listed.json() == []
        # Absent for compare-and-set and counters too.
        cas = await client.post(
            f"{API}/set",
            json={"key": "k", "data": "again", "if_version": 0, "scope": "workflow"},
            headers=WF,
        )
        assert cas.status_code == 200


async def test_incr_on_expired_counter_starts_over(make_service: ServiceFactory) -> None:
    async with (
        make_service(ttl_purge_interval_seconds=0) as service,
        http_client(service) as client,
    ):
        await client.post(f"{API}/set", json={"key": "n", "data": 10, "ttl_seconds": 0.2})
        kept = await client.post(f"{API}/incr", json={"key": "n"})
        assert kept.json()["data"] == 11 and "expires_at" in kept.json()  # incr keeps the TTL
        expires_us = now_us() + 200_000
        await wait_until(lambda: _passed(expires_us))
        fresh = await client.post(f"{API}/incr", json={"key": "n"})
        assert fresh.json()["data"] == 1


async def test_purger_deletes_with_expiry_event(make_service: ServiceFactory) -> None:
    async with (
        make_service(ttl_purge_interval_seconds=0.1) as service,
        http_client(service) as client,
    ):
        seen: list = []
        service.store.watch(seen.extend)
        await client.post(
            f"{API}/set", json={"key": "gone", "data": {"v": 1}, "ttl_seconds": 0.2}, headers=WF
        )
        await client.post(
            f"{API}/set", json={"key": "stays", "data": 2, "ttl_seconds": 3600}, headers=WF
        )
        await client.post(f"{API}/set", json={"key": "plain", "data": 3}, headers=WF)

        async def purged() -> bool:
            return any(e.action == "delete" for e in seen)

        await wait_until(purged)
        deletes = [e for e in seen if e.action == "delete"]
        assert [(e.key, e.scope, e.scope_id) for e in deletes] == [("gone", "workflow", "wf-ttl")]
        assert deletes[0].metadata["expired"] is True
        assert deletes[0].metadata["reason"] == "ttl"
        assert deletes[0].previous_data == {"v": 1}
        assert await service.store.expired_keys(now_us(), 10) == []
        # The log agrees with what watchers saw.
        logged = [e for e in await every_event(service.store) if e.action == "delete"]
        assert [e.id for e in logged] == [e.id for e in deletes]
        assert logged[0].metadata["expired"] is True
        for key in ("stays", "plain"):
            assert (
                await client.post(f"{API}/get", json={"key": key}, headers=WF)
            ).status_code == 200


async def test_purge_spares_a_key_rewritten_without_ttl(make_service: ServiceFactory) -> None:
    async with (
        make_service(ttl_purge_interval_seconds=0) as service,
        http_client(service) as client,
    ):
        await client.post(f"{API}/set", json={"key": "k", "data": 1, "ttl_seconds": 0.2})
        expires_us = now_us() + 200_000
        await wait_until(lambda: _passed(expires_us))
        await client.post(f"{API}/set", json={"key": "k", "data": 2})
        assert await purge_expired(service.store) == 0
        assert (await client.post(f"{API}/get", json={"key": "k"})).json()["data"] == 2
        events = await every_event(service.store)
        assert [e.action for e in events] == ["set", "set"]
        # The rewrite of an expired key is a fresh record with no previous value.
        assert events[1].previous_data is None


async def test_purge_in_batches(make_service: ServiceFactory) -> None:
    async with (
        make_service(ttl_purge_interval_seconds=0) as service,
        http_client(service) as client,
    ):
        ops = [{"op": "set", "key": f"k{i}", "data": i, "ttl_seconds": 0.2} for i in range(25)]
        assert (await client.post(f"{API}/batch", json={"ops": ops})).status_code == 200
        expires_us = now_us() + 200_000
        await wait_until(lambda: _passed(expires_us))
        assert await purge_expired(service.store, batch=10) == 25
        deletes = [e for e in await every_event(service.store) if e.action == "delete"]
        assert len(deletes) == 25 and all(e.metadata.get("expired") for e in deletes)


async def test_bad_ttl_is_400(make_service: ServiceFactory) -> None:
    async with make_service() as service, http_client(service) as client:
        for ttl in (0, -1, "10", True, 10**12):
            r = await client.post(f"{API}/set", json={"key": "k", "data": 1, "ttl_seconds": ttl})
            assert r.status_code == 400, ttl
        assert await service.store.last_event_id() == 0


async def _passed(us: int) -> bool:
    return now_us() > us + 5_000
