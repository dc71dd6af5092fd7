"""Vector routes over in-process HTTP, on both backends: answers, filters, scopes, errors."""

from __future__ import annotations

import asyncio
import math

import pytest

from .conftest import HIT_FIELDS, VectorAPI, client_for

# Hand-made vectors whose neighbours of Q differ per metric (see the expected orders).
POINTS = {
    "a": [1.0, 0.0, 0.0],
    "b": [0.0, 1.0, 0.0],
    "c": [0.6, 0.8, 0.0],
    "d": [0.0, 0.0, 5.0],
    "e": [-2.0, 0.0, 0.0],
    "f": [30.0, 0.0, 0.0],
}
Q = [3.0, 4.0, 0.0]


def _l2(p: list[float]) -> float:
    return math.dist(p, Q)


EXPECTED = {
    # cosine: c=1.0, b=0.8, a=f=0.6 (tie broken by key), d=0, e=-0.6
    "cosine": (
        ["c", "b", "a", "f", "d", "e"],
        {"c": 1.0, "b": 0.8, "a": 0.6, "f": 0.6, "d": 0.0, "e": -0.6},
    ),
    # dot: f=90, c=5, b=4, a=3, d=0, e=-6
    "dot": (
        ["f", "c", "b", "a", "d", "e"],
        {"f": 90.0, "c": 5.0, "b": 4.0, "a": 3.0, "d": 0.0, "e": -6.0},
    ),
    # l2: c=4, b=sqrt(18), a=sqrt(20), e=sqrt(41), d=sqrt(50), f=sqrt(745)
    "l2": (["c", "b", "a", "e", "d", "f"], {k: 1 / (1 + _l2(p)) for k, p in POINTS.items()}),
}


def _distance(metric: str, score: float) -> float:
    if metric == "cosine":
        return 1 - score
    if metric == "dot":
        return -score
    return 1 / score - 1


@pytest.mark.parametrize("metric", ["cosine", "dot", "l2"])
async def test_known_answers_per_metric(make_service, metric: str) -> None:
    service = await make_service(vector_metric=metric)
    async with client_for(service) as client:
        api = VectorAPI(client)
        for key, point in POINTS.items():
            response = await api.set(key, point, {"name": key})
            assert response.status_code == 200
            assert response.json() == {
                "key": key,
                "scope": "global",
                "scope_id": "global",
                "metadata": {"name": key},
            }
        response = await api.search(Q, top_k=6)
        assert response.status_code == 200
        hits = response.json()
        order, scores = EXPECTED[metric]
        assert [h["key"] for h in hits] == order
        for hit in hits:
            assert set(hit) == HIT_FIELDS
            assert hit["score"] == pytest.approx(scores[hit["key"]], rel=1e-6, abs=1e-6)
            assert hit["distance"] == pytest.approx(
                _distance(metric, scores[hit["key"]]), rel=1e-6, abs=1e-6
            )
            assert hit["metadata"] == {"name": hit["key"]}
            assert (hit["scope"], hit["scope_id"]) == ("global", "global")
            assert hit["created_at"].endswith("Z")
        # best first for every metric
        assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
        assert await api.keys(Q, top_k=2) == order[:2]


async def test_top_k_default_and_larger_than_scope(vectors: VectorAPI) -> None:
    for i in range(12):
        assert (await vectors.set(f"k{i:02d}", [1.0, i / 10])).status_code == 200
    assert len(await vectors.keys([1.0, 0.0])) == 10
    assert len(await vectors.keys([1.0, 0.0], top_k=1000)) == 12
    # the AgentField SDK sends "filters": {} and an explicit top_k; both are fine
    assert len(await vectors.keys([1.0, 0.0], top_k=3, filters={})) == 3
    assert len(await vectors.keys([1.0, 0.0], filters=None)) == 10


async def test_search_of_empty_scope_is_empty(vectors: VectorAPI) -> None:
    assert await vectors.keys([0.1, 0.2]) == []
    assert await vectors.with_headers(X_Session_ID="nobody").keys([1.0], filters={"x": 1}) == []


async def test_filters_match_metadata_fields_by_equality(vectors: VectorAPI) -> None:
    rows = {
        "en-int": {"lang": "en", "n": 1},
        "fr-float": {"lang": "fr", "n": 1.0},
        "en-bool": {"lang": "en", "n": True},
        "en-obj": {"lang": "en", "tags": ["x", "y"], "obj": {"a": 1, "b": 2}},
        "null": {"lang": None},
        "bare": None,
    }
    for i, (key, metadata) in enumerate(rows.items()):
        assert (await vectors.set(key, [1.0, float(i)], metadata)).status_code == 200

    async def matching(filters: dict) -> set[str]:
        return set(await vectors.keys([1.0, 0.0], top_k=100, filters=filters))

    assert await matching({"lang": "en"}) == {"en-int", "en-bool", "en-obj"}
    assert await matching({"n": 1}) == {"en-int", "fr-float"}  # 1 == 1.0, but not true
    assert await matching({"n": 1.0}) == {"en-int", "fr-float"}
    assert await matching({"n": True}) == {"en-bool"}
    assert await matching({"obj": {"b": 2, "a": 1}}) == {"en-obj"}  # key order does not matter
    assert await matching({"tags": ["x", "y"]}) == {"en-obj"}
    assert await matching({"tags": ["x"]}) == set()  # equality, not containment
    assert await matching({"lang": "en", "n": 1}) == {"en-int"}
    assert await matching({"lang": None}) == {"null"}  # an explicit null, not a missing field
    assert await matching({"missing": "x"}) == set()
    assert await matching({}) == set(rows)
    # top_k applies after filtering: the best of the matches
    assert await vectors.keys([0.0, 1.0], top_k=1, filters={"lang": "en"}) == ["en-obj"]


async def test_scope_isolation_between_sessions(vectors: VectorAPI) -> None:
    s1 = vectors.with_headers(X_Session_ID="s1")
    s2 = vectors.with_headers(X_Session_ID="s2")
    assert (await s1.set("shared-name", [1.0, 0.0], {"owner": "s1"})).json()["scope_id"] == "s1"
    assert (await s1.set("only-s1", [0.9, 0.1])).status_code == 200
    assert (await s2.set("shared-name", [0.0, 1.0], {"owner": "s2"})).json()["scope_id"] == "s2"
    hits = (await s2.search([1.0, 0.0], top_k=100)).json()
    assert [(h["key"], h["scope_id"], h["metadata"]) for h in hits] == [
        ("shared-name", "s2", {"owner": "s2"})
    ]
    assert set(await s1.keys([1.0, 0.0], top_k=100)) == {"shared-name", "only-s1"}
    assert set(await s1.keys([1.0, 0.0], top_k=100, filters={"owner": "s2"})) == set()
    # no headers: the global scope, which holds nothing
    assert await vectors.keys([1.0, 0.0]) == []


async def test_unscoped_calls_use_the_write_target_and_never_climb(vectors: VectorAPI) -> None:
    both = vectors.with_headers(X_Workflow_ID="wf-1", X_Session_ID="s1")
    session = vectors.with_headers(X_Session_ID="s1")
    assert (await session.set("in-session", [1.0, 0.0])).json()["scope"] == "session"
    assert (await vectors.set("in-global", [1.0, 0.0])).json()["scope"] == "global"
    written = (await both.set("in-workflow", [0.0, 1.0])).json()
    assert (written["scope"], written["scope_id"]) == ("workflow", "wf-1")
    # unscoped search with a workflow header sees the workflow only (no hierarchy)
    assert await both.keys([1.0, 0.0]) == ["in-workflow"]
    assert await both.keys([1.0, 0.0], scope="session") == ["in-session"]
    assert await both.keys([1.0, 0.0], scope="global") == ["in-global"]
    # an unscoped delete acts on the write target too
    assert (await both.delete("in-session")).status_code == 204
    assert await session.keys([1.0, 0.0]) == ["in-session"]
    assert (await both.delete("in-session", scope="session")).status_code == 204
    assert await session.keys([1.0, 0.0]) == []


async def test_scoped_call_without_its_header_is_400(vectors: VectorAPI) -> None:
    for response in (
        await vectors.set("k", [1.0], scope="session"),
        await vectors.search([1.0], scope="actor"),
        await vectors.delete("k", scope="workflow"),
    ):
        assert response.status_code == 400
        assert response.json()["code"] == "missing_scope_id"
    response = await vectors.search([1.0], scope="team")
    assert (response.status_code, response.json()["code"]) == (400, "invalid_scope")


async def test_dimension_mismatch(vectors: VectorAPI) -> None:
    assert (await vectors.set("three", [1.0, 2.0, 3.0])).status_code == 200
    response = await vectors.set("two", [1.0, 2.0])
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "dimension_mismatch"
    assert body["details"]["expected"] == 3 and body["details"]["got"] == 2
    response = await vectors.search([1.0, 2.0])
    assert (response.status_code, response.json()["code"]) == (400, "dimension_mismatch")
    assert await vectors.keys([1.0, 2.0, 3.0]) == ["three"]
    # another scope may hold another dimension
    other = vectors.with_headers(X_Actor_ID="actor-1")
    assert (await other.set("two", [1.0, 2.0])).status_code == 200
    assert await other.keys([1.0, 2.0]) == ["two"]
    # the only vector of a scope may be replaced by one of a new dimension
    assert (await vectors.set("three", [1.0, 2.0])).status_code == 200
    assert await vectors.keys([1.0, 2.0]) == ["three"]
    # an emptied scope takes any dimension again
    assert (await vectors.delete("three")).status_code == 204
    assert (await vectors.set("four", [1.0, 2.0, 3.0, 4.0])).status_code == 200
    assert await vectors.keys([1.0, 2.0, 3.0, 4.0]) == ["four"]


async def test_delete(vectors: VectorAPI) -> None:
    for key, point in (("x", [1.0, 0.0]), ("y", [0.0, 1.0])):
        await vectors.set(key, point)
    assert (await vectors.delete("x")).status_code == 204
    assert await vectors.keys([1.0, 0.0]) == ["y"]
    assert (await vectors.delete("x")).status_code == 204  # absent: still 204
    assert (await vectors.delete("never-set")).status_code == 204
    await vectors.set("x", [1.0, 0.0])
    assert await vectors.keys([1.0, 0.0]) == ["x", "y"]


async def test_set_replaces_embedding_and_metadata(vectors: VectorAPI) -> None:
    first = await vectors.set("doc", [1.0, 0.0], {"v": 1})
    assert first.status_code == 200
    await vectors.set("other", [0.7, 0.7])
    before = (await vectors.search([1.0, 0.0], top_k=1)).json()[0]
    assert before["key"] == "doc"
    await asyncio.sleep(0.002)
    assert (await vectors.set("doc", [0.0, 1.0], {"v": 2})).json()["metadata"] == {"v": 2}
    hits = (await vectors.search([1.0, 0.0], top_k=10)).json()
    assert [h["key"] for h in hits] == ["other", "doc"]
    doc = hits[1]
    assert doc["metadata"] == {"v": 2}
    assert doc["score"] == pytest.approx(0.0, abs=1e-9)
    assert doc["created_at"] == before["created_at"]
    assert doc["updated_at"] > before["updated_at"]
    # without metadata the set replaces it with none
    await vectors.set("doc", [0.0, 1.0])
    assert (await vectors.search([0.0, 1.0], top_k=1)).json()[0]["metadata"] == {}


async def test_vectors_and_keys_are_separate(client, vectors: VectorAPI) -> None:
    assert (
        await client.post("/api/v1/memory/set", json={"key": "k", "data": "value"})
    ).status_code == 200
    assert (await vectors.set("k", [1.0, 0.0])).status_code == 200
    assert (await vectors.delete("k")).status_code == 204
    got = await client.post("/api/v1/memory/get", json={"key": "k"})
    assert (got.status_code, got.json()["data"]) == (200, "value")
    await vectors.set("k", [1.0, 0.0])
    await client.post("/api/v1/memory/delete", json={"key": "k"})
    assert await vectors.keys([1.0, 0.0]) == ["k"]


BAD_SETS = [
    ({"key": "bad"}, "invalid_embedding"),
    ({"key": "bad", "embedding": []}, "invalid_embedding"),
    ({"key": "bad", "embedding": "0.1,0.2"}, "invalid_embedding"),
    ({"key": "bad", "embedding": [1.0, "2"]}, "invalid_embedding"),
    ({"key": "bad", "embedding": [True, 1.0]}, "invalid_embedding"),
    ({"key": "bad", "embedding": [[1.0, 2.0]]}, "invalid_embedding"),
    ({"key": "bad", "embedding": [None, 1.0]}, "invalid_embedding"),
    ({"key": "bad", "embedding": {"0": 1.0}}, "invalid_embedding"),
    ({"key": "bad", "embedding": [1e300, 1.0]}, "invalid_embedding"),
    ({"key": "bad", "embedding": [10**30, 1.0]}, "invalid_embedding"),
    ({"key": "bad", "embedding": [0.0, 0.0]}, "invalid_embedding"),  # zero vector under cosine
    ({"key": "bad", "embedding": [0.5] * 16_001}, "invalid_embedding"),
    ({"embedding": [1.0, 0.0]}, "invalid_key"),
    ({"key": "", "embedding": [1.0, 0.0]}, "invalid_key"),
    ({"key": "bad", "embedding": [1.0, 0.0], "metadata": "text"}, "invalid_parameter"),
    ({"key": "bad", "embedding": [1.0, 0.0], "metadata": [1]}, "invalid_parameter"),
    ({"key": "bad", "embedding": [1.0, 0.0], "scope": "team"}, "invalid_scope"),
]

BAD_SEARCHES = [
    ({}, "invalid_embedding"),
    ({"query_embedding": []}, "invalid_embedding"),
    ({"query_embedding": ["a"]}, "invalid_embedding"),
    ({"query_embedding": [1.0, 0.0], "top_k": 0}, "invalid_parameter"),
    ({"query_embedding": [1.0, 0.0], "top_k": 1001}, "invalid_parameter"),
    ({"query_embedding": [1.0, 0.0], "top_k": -1}, "invalid_parameter"),
    ({"query_embedding": [1.0, 0.0], "top_k": "10"}, "invalid_parameter"),
    ({"query_embedding": [1.0, 0.0], "top_k": 2.5}, "invalid_parameter"),
    ({"query_embedding": [1.0, 0.0], "top_k": True}, "invalid_parameter"),
    ({"query_embedding": [1.0, 0.0], "filters": ["lang", "en"]}, "invalid_filters"),
    ({"query_embedding": [1.0, 0.0], "filters": "lang=en"}, "invalid_filters"),
    ({"query_embedding": [1.0, 0.0], "filters": {"": "x"}}, "invalid_filters"),
    ({"query_embedding": [1.0, 0.0], "filters": {"n": {"$gt": 1}}}, "invalid_filters"),
]


async def test_bad_input_is_400_and_changes_nothing(client, vectors: VectorAPI) -> None:
    await vectors.set("keep", [1.0, 0.0], {"tag": "original"})
    before = (await vectors.search([1.0, 0.0])).json()
    for body, code in BAD_SETS:
        response = await client.post("/api/v1/memory/vector/set", json=body)
        assert response.status_code == 400, (body, response.text)
        assert set(response.json()) == {"error", "code", "details"}
        assert response.json()["code"] == code, body
    for body, code in BAD_SEARCHES:
        response = await client.post("/api/v1/memory/vector/search", json=body)
        assert response.status_code == 400, (body, response.text)
        assert response.json()["code"] == code, body
    # NaN and Infinity are not JSON: refused before any embedding rule runs
    for raw in (
        b'{"key":"bad","embedding":[NaN,1.0]}',
        b'{"key":"bad","embedding":[Infinity,1.0]}',
        b'{"key":"bad","embedding":[1' + b"0" * 400 + b",1.0]}",
    ):
        response = await client.post(
            "/api/v1/memory/vector/set", content=raw, headers={"content-type": "application/json"}
        )
        assert response.status_code == 400
        assert set(response.json()) == {"error", "code", "details"}
    raw = b'{"query_embedding":[1.0,-Infinity]}'
    response = await client.post("/api/v1/memory/vector/search", content=raw)
    assert response.status_code == 400
    assert (await vectors.delete("")).status_code == 400
    assert (await vectors.search([1.0, 0.0])).json() == before


async def test_concurrent_writes_to_one_scope(vectors: VectorAPI) -> None:
    responses = await asyncio.gather(*(vectors.set(f"k{i}", [1.0, i / 50]) for i in range(50)))
    assert all(r.status_code == 200 for r in responses)
    assert set(await vectors.keys([1.0, 0.0], top_k=100)) == {f"k{i}" for i in range(50)}


async def test_concurrent_first_writes_agree_on_one_dimension(vectors: VectorAPI) -> None:
    scoped = vectors.with_headers(X_Session_ID="race")
    sets = [scoped.set(f"k{i}", [1.0] * (2 + i % 2)) for i in range(20)]
    responses = await asyncio.gather(*sets)
    won = {2 + i % 2 for i, r in enumerate(responses) if r.status_code == 200}
    lost = [r for r in responses if r.status_code != 200]
    assert len(won) == 1 and len(lost) == 10
    assert all(r.status_code == 400 and r.json()["code"] == "dimension_mismatch" for r in lost)
    dim = won.pop()
    expected = {f"k{i}" for i in range(20) if 2 + i % 2 == dim}
    assert set(await scoped.keys([1.0] * dim, top_k=100)) == expected


async def test_vectors_survive_a_restart(make_service) -> None:
    service = await make_service()
    async with client_for(service) as client:
        api = VectorAPI(client).with_headers(X_Session_ID="s")
        await api.set("a", [1.0, 0.0], {"n": 1})
        await api.set("b", [0.0, 1.0])
        await api.set("gone", [0.5, 0.5])
        await api.delete("gone")
    await service.stop()
    again = await make_service()
    async with client_for(again) as client:
        api = VectorAPI(client).with_headers(X_Session_ID="s")
        hits = (await api.search([1.0, 0.1])).json()
        assert [(h["key"], h["metadata"]) for h in hits] == [("a", {"n": 1}), ("b", {})]
        assert await api.keys([1.0, 0.1], filters={"n": 1}) == ["a"]
        # after the (lazy) load, writes keep the loaded scope in step
        await api.set("c", [1.0, 0.05])
        assert await api.keys([1.0, 0.05], top_k=1) == ["c"]
