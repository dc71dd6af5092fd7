"""Vector routes on a real uvicorn server on loopback, driven the way AgentField's SDK drives them.

The requests below replay what ``agentfield.memory.MemoryClient`` sends (read from its
source): context headers from ``ExecutionContext.to_headers()`` (the run id doubles as the
workflow id), ``set_vector`` posts ``{"key", "embedding"}`` plus ``metadata`` only when given,
``similarity_search`` posts ``{"query_embedding", "top_k", "filters": filters or {}}``, a
scoped client adds ``"scope"`` to the body and the scope id to its header, and every call
does ``raise_for_status()`` and returns ``response.json()``.
"""

from __future__ import annotations

import httpx

from .conftest import HIT_FIELDS

RUN = "run-5f3a"
SDK_HEADERS = {
    "X-Run-ID": RUN,
    "X-Workflow-ID": RUN,
    "X-Parent-Execution-ID": "exec-1",
    "X-Execution-ID": "exec-1",
    "X-Workflow-Run-ID": RUN,
    "X-Agent-Node-ID": "support-agent",
    "X-Session-ID": "user-42",
}


async def test_agentfield_sdk_calls_get_what_the_sdk_expects(live_server) -> None:
    base = f"{live_server.url}/api/v1/memory/vector"
    async with httpx.AsyncClient(timeout=15.0) as http:

        async def call(path: str, payload: dict, headers: dict | None = None):
            response = await http.post(
                f"{base}/{path}", json=payload, headers=headers or SDK_HEADERS
            )
            response.raise_for_status()
            return response

        # app.memory.set_vector(...): unscoped, so the current workflow (= run) scope
        stored = (
            await call(
                "set",
                {"key": "faq-1", "embedding": [0.9, 0.1, 0.0], "metadata": {"topic": "billing"}},
            )
        ).json()
        assert stored == {
            "key": "faq-1",
            "scope": "workflow",
            "scope_id": RUN,
            "metadata": {"topic": "billing"},
        }
        await call(
            "set", {"key": "faq-2", "embedding": [0.1, 0.9, 0.0]}
        )  # metadata omitted when None
        await call(
            "set", {"key": "faq-3", "embedding": [0.7, 0.7, 0.1], "metadata": {"topic": "billing"}}
        )

        # app.memory.similarity_search(query, top_k=10, filters=None)
        results = (
            await call("search", {"query_embedding": [1.0, 0.0, 0.0], "top_k": 10, "filters": {}})
        ).json()
        assert isinstance(results, list) and [r["key"] for r in results] == [
            "faq-1",
            "faq-3",
            "faq-2",
        ]
        assert all(set(r) == HIT_FIELDS for r in results)
        assert results[0]["score"] > results[1]["score"] > results[2]["score"]
        assert (results[0]["scope"], results[0]["scope_id"]) == ("workflow", RUN)
        filtered = (
            await call(
                "search",
                {"query_embedding": [0.0, 1.0, 0.0], "top_k": 1, "filters": {"topic": "billing"}},
            )
        ).json()
        assert [r["key"] for r in filtered] == ["faq-3"]

        # app.memory.session("user-42").set_vector / similarity_search: scope in the body
        await call("set", {"key": "pref", "embedding": [0.0, 0.0, 1.0], "scope": "session"})
        session = (
            await call(
                "search",
                {"query_embedding": [0.0, 0.0, 1.0], "top_k": 5, "filters": {}, "scope": "session"},
            )
        ).json()
        assert [(r["key"], r["scope"], r["scope_id"]) for r in session] == [
            ("pref", "session", "user-42")
        ]

        # app.memory.global_scope.set_vector / similarity_search
        await call("set", {"key": "kb", "embedding": [1.0, 1.0, 1.0], "scope": "global"})
        world = (
            await call(
                "search",
                {"query_embedding": [1.0, 1.0, 1.0], "top_k": 10, "filters": {}, "scope": "global"},
            )
        ).json()
        assert [(r["key"], r["scope_id"]) for r in world] == [("kb", "global")]

        # delete_vector(key) and delete_vector(key, scope=...)
        await call("delete", {"key": "faq-1"})
        await call("delete", {"key": "pref", "scope": "session"})
        left = (
            await call("search", {"query_embedding": [1.0, 0.0, 0.0], "top_k": 10, "filters": {}})
        ).json()
        assert [r["key"] for r in left] == ["faq-3", "faq-2"]
        gone = (
            await call(
                "search",
                {"query_embedding": [0.0, 0.0, 1.0], "top_k": 5, "filters": {}, "scope": "session"},
            )
        ).json()
        assert gone == []

        # errors come back as 4xx with the protocol's error body (the SDK raises on them)
        bad = await http.post(
            f"{base}/set", json={"key": "x", "embedding": []}, headers=SDK_HEADERS
        )
        assert bad.status_code == 400 and set(bad.json()) == {"error", "code", "details"}
