"""Vector writes in ``POST /memory/batch`` (ext): ``vector_set`` / ``vector_delete`` ops
commit in the same transaction as key writes; a bad op applies nothing. In process, on
SQLite and PostgreSQL."""

from __future__ import annotations

import httpx
import pytest

API = "/api/v1/memory"
SESSION = {"X-Session-ID": "s1"}


async def _search(client: httpx.AsyncClient) -> list[str]:
    body = {"query_embedding": [1.0, 0.0], "top_k": 10, "scope": "session"}
    reply = await client.post(f"{API}/vector/search", json=body, headers=SESSION)
    assert reply.status_code == 200
    return [hit["key"] for hit in reply.json()]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"], indirect=True)
async def test_vectors_and_values_in_one_batch(client: httpx.AsyncClient) -> None:
    ops = [
        {"op": "set", "key": "doc", "data": {"text": "hi"}},
        {"op": "vector_set", "key": "doc#0", "embedding": [1.0, 0.0], "metadata": {"k": "doc"}},
        {"op": "vector_set", "key": "doc#1", "embedding": [0.0, 1.0]},
    ]
    body = {"ops": [{**op, "scope": "session"} for op in ops]}
    reply = await client.post(f"{API}/batch", json=body, headers=SESSION)
    assert reply.status_code == 200, reply.text
    results = reply.json()["results"]
    assert results[1] == {
        "key": "doc#0",
        "scope": "session",
        "scope_id": "s1",
        "metadata": {"k": "doc"},
    }
    assert await _search(client) == ["doc#0", "doc#1"]

    delete = {"op": "vector_delete", "key": "doc#1", "scope": "session"}
    absent = {"op": "vector_delete", "key": "nothing", "scope": "session"}
    reply = await client.post(f"{API}/batch", json={"ops": [delete, absent]}, headers=SESSION)
    assert [r["deleted"] for r in reply.json()["results"]] == [True, False]
    assert await _search(client) == ["doc#0"]

    # A bad vector anywhere in the batch: nothing applied, the op named.
    bad = [
        {"op": "set", "key": "doc", "data": "changed", "scope": "session"},
        {"op": "vector_delete", "key": "doc#0", "scope": "session"},
        {"op": "vector_set", "key": "v", "embedding": [1.0, "x"], "scope": "session"},
    ]
    reply = await client.post(f"{API}/batch", json={"ops": bad}, headers=SESSION)
    assert reply.status_code == 400
    assert reply.json()["code"] == "invalid_embedding"
    assert reply.json()["details"]["index"] == 2
    # A conflict found while applying (after the vector ops): nothing applied either.
    conflict = [bad[1], {**bad[0], "if_version": 99}]
    reply = await client.post(f"{API}/batch", json={"ops": conflict}, headers=SESSION)
    assert reply.status_code == 412, reply.text
    assert reply.json()["details"]["applied"] is False
    got = await client.post(f"{API}/get", json={"key": "doc", "scope": "session"}, headers=SESSION)
    assert got.json()["data"] == {"text": "hi"}
    assert await _search(client) == ["doc#0"]
