"""Property tests: any Unicode key (SQL metacharacters and glob characters included) and any
JSON value round-trip exactly, on both backends; hostile keys are matched literally."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentfield_asgi.server.app import MemoryService

from .helpers import API

HOSTILE = [
    "'",
    '"',
    ";",
    "--",
    "/*",
    "*/",
    "%",
    "_",
    "\\",
    "*",
    "?",
    "[",
    "]",
    "!",
    "^",
    "$",
    "(",
    ")",
    "{",
    "}",
    "|",
    ".",
    "+",
    "\t",
    "\n",
    " ",
    "'; DROP TABLE memory; --",
    "\u202e",
    "🦀",
    "é",
]

# Keys: any Unicode scalar except NUL (refused by the protocol) and lone surrogates (not
# representable in UTF-8 JSON), mixed with SQL/glob metacharacters; at most 1,024 UTF-8 bytes.
key_text = (
    st.lists(
        st.one_of(
            st.sampled_from(HOSTILE),
            st.text(
                st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=8
            ),
        ),
        min_size=1,
        max_size=12,
    )
    .map("".join)
    .filter(lambda k: 0 < len(k.encode()) <= 1024)
)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(
            st.text(
                st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                max_size=10,
            ),
            children,
            max_size=5,
        ),
    ),
    max_leaves=30,
)

PROPERTY = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


async def _roundtrip(client: httpx.AsyncClient, key: str, value: Any, scope: str) -> None:
    headers = {"X-Session-ID": "prop-session"}
    r = await client.post(
        f"{API}/set", json={"key": key, "data": value, "scope": scope}, headers=headers
    )
    assert r.status_code == 200, r.text
    assert r.json()["key"] == key and json_equal(r.json()["data"], value)
    got = await client.post(f"{API}/get", json={"key": key}, headers=headers)
    assert got.status_code == 200
    assert got.json()["key"] == key
    assert json_equal(got.json()["data"], value)


def json_equal(a: Any, b: Any) -> bool:
    """Equal as JSON: same structure, strings, booleans and nulls; numbers with the same
    decimal value (JSON has one number type: PostgreSQL's JSONB keeps a number's value
    exactly but may change its notation, e.g. 3.5e16 comes back as 35000000000000000).
    ``True`` and ``1`` differ."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return Decimal(repr(a)) == Decimal(repr(b))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(json_equal, a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@PROPERTY
@given(key=key_text)
async def test_any_key_round_trips_literally(
    client: httpx.AsyncClient, service: MemoryService, key: str
) -> None:
    await _roundtrip(client, key, {"key": key}, "session")
    # Listing by the key itself as a prefix finds it; a glob-looking key is not a pattern.
    listed = await client.get(
        f"{API}/list",
        params={"scope": "session", "prefix": key},
        headers={"X-Session-ID": "prop-session"},
    )
    assert key in [rec["key"] for rec in listed.json()]
    assert all(rec["key"].startswith(key) for rec in listed.json())
    many = await client.post(
        f"{API}/get_many", json={"keys": [key]}, headers={"X-Session-ID": "prop-session"}
    )
    assert many.json()["records"][key]["data"] == {"key": key}
    # Deleting it removes exactly that key.
    assert (
        await client.post(
            f"{API}/delete",
            json={"key": key, "scope": "session"},
            headers={"X-Session-ID": "prop-session"},
        )
    ).status_code == 204
    gone = await client.post(
        f"{API}/get",
        json={"key": key, "scope": "session"},
        headers={"X-Session-ID": "prop-session"},
    )
    assert gone.status_code == 404


@PROPERTY
@given(value=json_values)
async def test_any_json_value_round_trips(client: httpx.AsyncClient, value: Any) -> None:
    await _roundtrip(client, "value", value, "global")


async def test_glob_keys_do_not_match_other_keys(client: httpx.AsyncClient) -> None:
    for key in ("a*", "a?", "a[bc]", "a%", "a_", "abc"):
        await client.post(f"{API}/set", json={"key": key, "data": key})
    for key in ("a*", "a?", "a[bc]", "a%", "a_"):
        r = await client.post(f"{API}/get", json={"key": key})
        assert r.json()["data"] == key
        listed = await client.get(f"{API}/list", params={"scope": "global", "prefix": key})
        assert [rec["key"] for rec in listed.json()] == [key]
    await client.post(f"{API}/delete", json={"key": "a*"})
    listed = await client.get(f"{API}/list", params={"scope": "global"})
    assert sorted(rec["key"] for rec in listed.json()) == sorted(["a?", "a[bc]", "a%", "a_", "abc"])
