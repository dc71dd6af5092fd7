"""PostgreSQL restarted under load: requests during the outage get 503 with the error body
(never a 500 or a dropped connection), and the service recovers by itself afterwards,
with every acknowledged write intact. Uses its own cluster, so the shared one is untouched."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx

from agentfield_asgi.testing import ServerProcess, ThrowawayPostgres

from .helpers import wait_until

API = "/api/v1/memory"


class Load:
    def __init__(self, url: str) -> None:
        self.url = url
        self.phase = "before"
        self.statuses: Counter[tuple[str, int]] = Counter()
        self.acked: dict[str, int] = {}
        self.bad: list[str] = []
        self.stop = False

    async def worker(self, w: int) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=60) as client:
            i = 0
            while not self.stop:
                i += 1
                key = f"w{w}:{i}"
                started = self.phase
                try:
                    if i % 2:
                        r = await client.post(f"{API}/set", json={"key": key, "data": i})
                    else:
                        r = await client.post(f"{API}/get", json={"key": f"w{w}:{i - 1}"})
                except httpx.TransportError as exc:
                    self.bad.append(f"{started}: transport error {exc!r}")
                    continue
                # A request that began in one phase and ended in another straddled a change.
                phase = started if self.phase == started else "transition"
                self.statuses[(phase, r.status_code)] += 1
                if r.status_code == 503:
                    body = r.json()
                    if body.get("code") != "storage_unavailable" or set(body) != {
                        "error",
                        "code",
                        "details",
                    }:
                        self.bad.append(f"{phase}: 503 body {body}")
                    await asyncio.sleep(0.02)
                elif r.status_code == 200 and i % 2:
                    self.acked[key] = i
                elif r.status_code == 200:
                    if r.json()["data"] != i - 1:
                        self.bad.append(f"{phase}: read {r.json()['data']} for w{w}:{i - 1}")
                elif not (r.status_code == 404 and f"w{w}:{i - 1}" not in self.acked):
                    # Only a key whose set was refused (503) may be missing.
                    self.bad.append(f"{phase}: {r.status_code} {r.text[:200]}")


async def test_postgres_restart_under_load(own_pg_cluster: ThrowawayPostgres) -> None:
    url = own_pg_cluster.create_database()
    server = ServerProcess(["--database-url", url]).start()
    load = Load(server.url)
    tasks = [asyncio.create_task(load.worker(w)) for w in range(6)]
    try:
        await wait_until(lambda: len(load.acked) >= 50, "no writes before the outage")
        await asyncio.to_thread(own_pg_cluster.stop)
        load.phase = "outage"
        await wait_until(lambda: load.statuses[("outage", 503)] >= 20, "no 503 during the outage")
        await asyncio.sleep(1.0)
        load.phase = "restarting"  # PostgreSQL accepts connections before pg_ctl returns
        await asyncio.to_thread(own_pg_cluster.start)
        load.phase = "after"
        await wait_until(
            lambda: load.statuses[("after", 200)] >= 50, "did not recover by itself", within=120
        )
    finally:
        load.stop = True
        await asyncio.gather(*tasks, return_exceptions=True)
    try:
        assert not load.bad, load.bad[:10]
        assert {"before", "outage", "after"} <= set(p for p, _ in load.statuses)
        # Requests made entirely while PostgreSQL was down all got 503.
        assert {s for (p, s) in load.statuses if p == "outage"} == {503}
        # Every acknowledged write survived the restart.
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            keys = list(load.acked)
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                r = await client.post(f"{API}/get_many", json={"keys": chunk})
                assert r.status_code == 200
                records = r.json()["records"]
                assert {k: records[k]["data"] for k in chunk} == {k: load.acked[k] for k in chunk}
    finally:
        server.stop()
