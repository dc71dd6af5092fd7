"""Export and import (``agentfield-asgi export`` / ``import``): a round trip SQLite ->
PostgreSQL -> SQLite keeps everything, an import run twice changes nothing, a dump taken
while writes go on is one snapshot, bad dumps are refused clearly, memory stays flat."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from agentfield_asgi.codec import dumps, loads
from agentfield_asgi.portability import export_dump
from agentfield_asgi.settings import Settings
from agentfield_asgi.store import Store, open_store
from agentfield_asgi.store.base import DeleteOp, IncrOp, SetOp, VectorSetOp
from agentfield_asgi.store.schema import SCHEMA_VERSION
from agentfield_asgi.testing import ThrowawayPostgres
from agentfield_asgi.testing.waits import wait_until


def cli(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """The real command, as an operator runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTFIELD_")}
    return subprocess.run(
        [sys.executable, "-m", "agentfield_asgi", *args],
        input=stdin,
        capture_output=True,
        timeout=300,
        env=env,
    )


def export(url: str, *extra: str) -> bytes:
    done = cli("export", "--database-url", url, *extra)
    assert done.returncode == 0, done.stderr.decode()
    assert b"exported" in done.stderr  # progress and summary on stderr, never in the dump
    return done.stdout


def import_(url: str, dump: bytes) -> str:
    done = cli("import", "--database-url", url, stdin=dump)
    assert done.returncode == 0, done.stderr.decode()
    return done.stderr.decode()


def body(dump: bytes) -> list[dict[str, Any]]:
    """The dump's lines after the header, parsed (JSONB reorders object keys)."""
    lines = [loads(line) for line in dump.splitlines()]
    assert lines[0]["type"] == "header" and lines[-1]["type"] == "end"
    return lines[1:]


async def opened(url: str) -> Store:
    store = open_store(Settings(database_url=url))
    await store.open()
    return store


async def fill(url: str) -> None:
    """Every kind of row: overwritten keys (version > 1), TTLs, metadata, a stored null,
    an increment, a delete, unicode, every scope, vectors."""
    store = await opened(url)
    try:
        await store.write([SetOp("global", "global", "plain", dumps({"a": [1, 2.5, None]}))])
        await store.write([SetOp("global", "global", "plain", dumps("second"), metadata={"m": 1})])
        await store.write([SetOp("session", "s-1", "ttl", dumps(1), ttl_seconds=3600)])
        await store.write([SetOp("actor", "ä-agent", "clé ✓", dumps(None))])
        await store.write([IncrOp("workflow", "wf-1", "count", 5)])
        await store.write([SetOp("workflow", "wf-1", "gone", dumps(0))])
        await store.write([DeleteOp("workflow", "wf-1", "gone")])
        embedding = np.array([0.25, -1.0, 3.5], dtype=np.float32)
        await store.write([VectorSetOp("global", "global", "vec", embedding, {"tag": "x"})])
    finally:
        await store.close()


async def test_round_trip_sqlite_postgres_sqlite(
    tmp_path: Path, pg_cluster: ThrowawayPostgres
) -> None:
    source = f"sqlite:///{tmp_path / 'source.db'}"
    await fill(source)
    first = await asyncio.to_thread(export, source, "--events")
    kinds = [item["type"] for item in body(first)]
    assert kinds.count("record") == 4 and kinds.count("vector") == 1
    assert kinds.count("event") == 8  # every set, incr, delete and vector set

    pg = pg_cluster.create_database()
    log = await asyncio.to_thread(import_, pg, first)
    assert "imported 4 records, 1 vectors, 8 events (13 new rows)" in log
    through_pg = await asyncio.to_thread(export, pg, "--events")
    assert body(through_pg) == body(first)

    back = f"sqlite:///{tmp_path / 'back.db'}"
    await asyncio.to_thread(import_, back, through_pg)
    assert body(await asyncio.to_thread(export, back, "--events")) == body(first)

    # The imported databases serve the data: versions, TTL and vectors kept, and the
    # event log goes on after the imported ids.
    for url in (pg, back):
        store = await opened(url)
        try:
            plain = await store.get("plain", [("global", "global")])
            assert plain is not None and plain.data == "second" and plain.version == 2
            assert plain.metadata == {"m": 1}
            ttl = await store.get("ttl", [("session", "s-1")])
            assert ttl is not None and ttl.expires_us is not None
            hits = await store.vector_search(
                "global", "global", np.array([0.25, -1.0, 3.5], np.float32),
                top_k=1, filters=None, metric="cosine",
            )  # fmt: skip
            assert [h.key for h in hits] == ["vec"] and hits[0].score > 0.999
            await store.write([SetOp("global", "global", "after", dumps(1))])
            assert await store.last_event_id() == 9
        finally:
            await store.close()


async def test_import_twice_changes_nothing(tmp_path: Path, pg_cluster: ThrowawayPostgres) -> None:
    source = f"sqlite:///{tmp_path / 'source.db'}"
    await fill(source)
    dump = await asyncio.to_thread(export, source, "--events")
    for target in (pg_cluster.create_database(), f"sqlite:///{tmp_path / 'target.db'}"):
        await asyncio.to_thread(import_, target, dump)
        log = await asyncio.to_thread(import_, target, dump)
        assert "(0 new rows)" in log
        assert body(await asyncio.to_thread(export, target, "--events")) == body(dump)


async def test_export_under_concurrent_writes_is_one_snapshot(database_url: str) -> None:
    """Writers keep setting pairs of keys to one value in one unit while the export runs:
    the dump holds equal pairs, and its records are exactly what replaying its events gives."""
    store = await opened(database_url)
    pairs = 1500  # several export batches, so writes land between them
    for start in range(0, pairs, 500):
        await store.write(
            [SetOp("session", "s", f"{side}{i:05}", dumps(0)) for i in range(start, start + 500)
             for side in "ab"]
        )  # fmt: skip
    stop = False
    written = 0

    async def writer(w: int) -> None:
        nonlocal written
        n = 0
        while not stop:
            n += 1
            i = (n * 7 + w * 131) % pairs
            value = dumps(w * 1_000_000 + n)
            await store.write(
                [SetOp("session", "s", f"a{i:05}", value), SetOp("session", "s", f"b{i:05}", value)]
            )
            written += 1

    tasks = [asyncio.create_task(writer(w)) for w in range(4)]
    try:
        await wait_until(lambda: written >= 50, "the writers wrote nothing")
        before = written
        out = io.BytesIO()
        await export_dump(store, out, events=True, progress=lambda _: None)
        during = written - before
        stop = True
        await asyncio.gather(*tasks)
    finally:
        stop = True
        await asyncio.gather(*tasks, return_exceptions=True)
    try:
        items = body(out.getvalue())
        records = {i["key"]: i["data"] for i in items if i["type"] == "record"}
        events = [i for i in items if i["type"] == "event"]
        assert during > 0, "no write happened while the export ran: the test shows nothing"
        assert len(records) == 2 * pairs
        assert all(records[f"a{i:05}"] == records[f"b{i:05}"] for i in range(pairs))
        replayed: dict[str, Any] = {}
        for event in events:
            replayed[event["key"]] = event["data"]
        assert replayed == records
        assert [e["id"] for e in events] == sorted({e["id"] for e in events})
        assert await store.last_event_id() > events[-1]["id"]  # writes went on after it
    finally:
        await store.close()


def test_refuses_bad_dumps_clearly(tmp_path: Path) -> None:
    target = f"sqlite:///{tmp_path / 'target.db'}"
    header = {
        "type": "header",
        "format": "agentfield-asgi-dump",
        "dump_version": 1,
        "schema_version": SCHEMA_VERSION,
        "source": "sqlite",
        "tables": ["record"],
    }
    record = {
        "type": "record", "scope": "global", "scope_id": "global", "key": "k", "data": 1,
        "created_us": 1, "updated_us": 1, "version": 1,
    }  # fmt: skip
    end = {"type": "end", "counts": {"record": 1}}

    def dump(*items: dict[str, Any]) -> bytes:
        return b"".join(dumps(i) + b"\n" for i in items)

    cases = {
        "newer": (dump({**header, "schema_version": SCHEMA_VERSION + 1}, record, end), "newer"),
        "not a dump": (b'{"hello": 1}\n', "not an agentfield-asgi dump"),
        "empty": (b"", "the dump is empty"),
        "bad line": (dump(header) + b"{oops\n" + dump(end), "line 2: not JSON"),
        "bad field": (dump(header, {**record, "version": "1"}, end), "line 2: 'version'"),
        "missing field": (dump(header, {**record, "key": None}, end), "line 2"),
        "unknown type": (dump(header, {"type": "secret"}, end), "unknown line type 'secret'"),
    }
    for name, (data, expected) in cases.items():
        done = cli("import", "--database-url", target, stdin=data)
        assert done.returncode == 2, (name, done.stderr)
        assert expected in done.stderr.decode(), (name, done.stderr)
        assert b"Traceback" not in done.stderr
    assert body(export(target)) == [{"type": "end", "counts": {"record": 0, "vector": 0}}]

    # Cut short: what was read is imported (a later full import completes it), and it says so.
    done = cli("import", "--database-url", target, stdin=dump(header, record))
    assert done.returncode == 2 and b"cut short" in done.stderr
    assert [i["key"] for i in body(export(target)) if i["type"] == "record"] == ["k"]

    missing = cli("export", "--database-url", f"sqlite:///{tmp_path / 'nowhere.db'}")
    assert missing.returncode == 2 and b"no database at" in missing.stderr
    assert not (tmp_path / "nowhere.db").exists()


PEAK_RSS = """
import resource, subprocess, sys
stdin = open(sys.argv[1], "rb") if sys.argv[1] else subprocess.DEVNULL
with open(sys.argv[2], "wb") as out:
    done = subprocess.run([sys.executable, "-m", "agentfield_asgi", *sys.argv[3:]],
                          stdin=stdin, stdout=out, stderr=subprocess.DEVNULL)
print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def peak_rss_kib(args: list[str], stdin_path: Path | None, stdout_path: Path) -> int:
    """Peak resident memory of one run of the command, measured by a small launcher (a child
    forked from this big test process would count the test's memory as its own)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTFIELD_")}
    launcher = [sys.executable, "-c", PEAK_RSS, str(stdin_path or ""), str(stdout_path), *args]
    done = subprocess.run(launcher, capture_output=True, text=True, env=env, timeout=600)
    returncode, peak = done.stdout.split()
    assert returncode == "0", done.stderr
    return int(peak)


async def test_memory_stays_flat_as_the_database_grows(tmp_path: Path) -> None:
    """Export and import of 100,000 keys (~30 MB of dump) peak within a few MB of 5,000."""
    peaks: dict[int, tuple[int, int]] = {}
    filler = "x" * 200
    for n in (5_000, 100_000):
        url = f"sqlite:///{tmp_path / f'{n}.db'}"
        store = await opened(url)
        try:
            for start in range(0, n, 5000):
                rows = [
                    ("session", f"s{i % 50}", f"key-{i:07}", dumps(filler + str(i)), 1, 2, 1,
                     None, None)
                    for i in range(start, min(n, start + 5000))
                ]  # fmt: skip
                await store.load("memory", rows)
        finally:
            await store.close()
        dump = tmp_path / f"{n}.jsonl"
        exported = await asyncio.to_thread(
            peak_rss_kib, ["export", "--database-url", url], None, dump
        )
        assert dump.stat().st_size > n * 200
        target = f"sqlite:///{tmp_path / f'{n}-copy.db'}"
        imported = await asyncio.to_thread(
            peak_rss_kib, ["import", "--database-url", target], dump, tmp_path / "out"
        )
        peaks[n] = (exported, imported)
    small, large = peaks[5_000], peaks[100_000]
    # Holding the data would cost well over 30 MB more at 100,000 keys.
    assert large[0] - small[0] < 12 * 1024, peaks
    assert large[1] - small[1] < 12 * 1024, peaks
