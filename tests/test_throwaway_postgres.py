"""The throwaway PostgreSQL helper starts wherever its binaries live, whoever runs it.

As root the cluster runs as ``postgres``, which cannot enter a private checkout or
``/root``: the binaries must then run from a shared copy, and the user's directory must
keep its permissions.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
from pathlib import Path

import asyncpg
import pytest

from agentfield_asgi.testing import PostgresUnavailable, ThrowawayPostgres, pgvector_bindir
from agentfield_asgi.testing.postgres import can_reach


def _private_wheel(tmp_path: Path, bindir: Path) -> Path:
    """The pgserver wheel's install (``pgserver/pginstall`` and the ``pgserver.libs`` its
    binaries load through ``$ORIGIN``), linked into a 0700 directory of this test's own, as
    a virtualenv in a private checkout has it."""
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    site = bindir.parents[2]

    def link(src: str, dst: str) -> str:
        os.link(src, dst)
        return dst

    for folder in (bindir.parent, site / "pgserver.libs"):
        copy = private / "site-packages" / folder.relative_to(site)
        shutil.copytree(folder, copy, symlinks=True, copy_function=link)
    return private / "site-packages" / bindir.relative_to(site)


def _remove_copy(cluster: ThrowawayPostgres) -> None:
    """Remove the shared copy a test's cluster made (it is keyed by the test's own path)."""
    made = cluster.run_bindir
    if made is None or made == cluster.bindir:
        return
    top = next(p for p in made.parents if p.name.startswith("agentfield-pginstall-"))
    shutil.rmtree(top, ignore_errors=True)


async def _has_vector_extension(url: str) -> bool:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        return await conn.fetchval("SELECT '[1,2]'::vector <=> '[2,4]'::vector") < 1e-6
    finally:
        await conn.close()


def test_cluster_starts_from_binaries_under_a_directory_its_user_cannot_enter(
    tmp_path: Path,
) -> None:
    bindir = _private_wheel(tmp_path, pgvector_bindir())
    private = tmp_path / "private"
    if os.geteuid() == 0:  # the situation the helper exists for
        assert not can_reach(bindir / "initdb")
    first = ThrowawayPostgres(bindir=bindir)
    second = ThrowawayPostgres(bindir=bindir)
    try:
        first.start()
        assert first.run_bindir is not None and can_reach(first.run_bindir / "initdb")
        # the copy keeps the tree's layout: extensions (share/, lib/) are found
        assert asyncio.run(_has_vector_extension(first.create_database()))
        second.start()  # the copy is made once and reused
        assert second.run_bindir == first.run_bindir
        if os.geteuid() != 0:
            assert first.run_bindir == bindir  # nothing to copy for a normal user
    finally:
        first.destroy()
        second.destroy()
        _remove_copy(first)
    assert stat.S_IMODE(private.stat().st_mode) == 0o700  # never loosened


def test_a_cluster_that_cannot_start_says_why_in_one_line(tmp_path: Path) -> None:
    bindir = tmp_path / "broken" / "bin"
    bindir.mkdir(parents=True)
    initdb = bindir / "initdb"
    initdb.write_text("#!/bin/sh\necho 'initdb: first complaint' >&2\necho 'second' >&2\nexit 1\n")
    initdb.chmod(0o755)
    cluster = ThrowawayPostgres(bindir=bindir)
    try:
        with pytest.raises(PostgresUnavailable) as caught:
            cluster.start()
    finally:
        cluster.destroy()
        _remove_copy(cluster)
    message = str(caught.value)
    assert "\n" not in message
    assert "initdb failed: initdb: first complaint; second" in message
    assert str(bindir) in message  # where to look


def test_missing_binaries_say_what_to_do(tmp_path: Path) -> None:
    cluster = ThrowawayPostgres(bindir=tmp_path / "nothing" / "bin")
    try:
        with pytest.raises(PostgresUnavailable, match=r"no initdb in .*: point bindir") as caught:
            cluster.start()
    finally:
        cluster.destroy()
    assert "\n" not in str(caught.value)
