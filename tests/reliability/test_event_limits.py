"""Limits on the event routes: patterns per subscription, history ``limit``, subscriptions
per client (429), each answered with the error body and never a broken stream."""

from __future__ import annotations

import time
from contextlib import ExitStack
from typing import Any

import httpx
import pytest

from agentfield_asgi.testing import ServerProcess

from .conftest import ServiceFactory
from .helpers import API, http_client


async def test_patterns_per_subscription_and_history_limit(make_service: ServiceFactory) -> None:
    async with (
        make_service(max_patterns=3, history_max_limit=50) as service,
        http_client(service) as client,
    ):
        await client.post(f"{API}/set", json={"key": "a", "data": 1})
        ok = await client.get(f"{API}/events/history", params={"patterns": "a,b,c", "limit": 50})
        assert ok.status_code == 200 and [e["key"] for e in ok.json()] == ["a"]
        too_many = await client.get(f"{API}/events/history", params={"patterns": "a,b,c,d"})
        assert too_many.status_code == 400 and too_many.json()["code"] == "invalid_pattern"
        assert too_many.json()["details"]["max_patterns"] == 3
        for limit in ("51", "0", "-1", "x", "1e3"):
            r = await client.get(f"{API}/events/history", params={"limit": limit})
            assert r.status_code == 400, limit
            assert set(r.json()) == {"error", "code", "details"}
        bad = await client.get(f"{API}/events/history", params={"patterns": "[unclosed"})
        assert bad.status_code == 400


@pytest.fixture
def limited_server(tmp_path: Any) -> Any:
    server = ServerProcess(
        ["--database-url", f"sqlite:///{tmp_path / 'm.db'}"],
        env={"AGENTFIELD_MAX_SUBSCRIBERS_PER_CLIENT": "2", "AGENTFIELD_MAX_PATTERNS": "2"},
    ).start()
    yield server
    server.stop()


def test_stream_limits_on_a_live_server(limited_server: ServerProcess) -> None:
    url = f"{limited_server.url}{API}/events/sse"
    with httpx.Client(timeout=httpx.Timeout(30, read=30)) as client:
        r = client.get(url, params={"patterns": "a,b,c"})
        assert r.status_code == 400 and r.json()["code"] == "invalid_pattern"
        with ExitStack() as streams:
            for _ in range(2):
                stream = streams.enter_context(client.stream("GET", url))
                assert stream.status_code == 200
            refused = client.get(url)
            assert refused.status_code == 429
            assert refused.json()["code"] == "too_many_subscriptions"
            assert set(refused.json()) == {"error", "code", "details"}
        # The closed streams free their slots (the server notices the disconnects).
        deadline = time.monotonic() + 30
        while True:
            with client.stream("GET", url) as stream:
                if stream.status_code == 200:
                    break
            assert time.monotonic() < deadline, "slots were not released"
            time.sleep(0.2)
