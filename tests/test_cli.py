"""``agentfield-asgi serve`` in subprocesses: flags, environment, the startup line, clean
exit on SIGINT/SIGTERM, workers only where the backend allows them."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from agentfield_asgi.cli import build_parser, settings_from_args
from agentfield_asgi.store import open_store
from agentfield_asgi.store.sqlite import SQLiteStore
from agentfield_asgi.testing import ServerProcess, ThrowawayPostgres

SERVE = [sys.executable, "-m", "agentfield_asgi", "serve"]
KIND = {"sqlite": "sqlite", "postgres": "postgresql"}
LISTENING = re.compile(
    r"agentfield-asgi listening on http://([\d.]+):(\d+) \(storage: (\w+), (.*)\)"
)


def run_serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``serve`` expected to refuse to start: its result (never left running)."""
    return subprocess.run(
        [*SERVE, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def announced(server: ServerProcess) -> list[re.Match[str]]:
    return [m for m in map(LISTENING.search, server.output().splitlines()) if m]


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_serve_defaults() -> None:
    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port, args.workers, args.database_url) == ("127.0.0.1", 8080, 1, None)


@pytest.mark.parametrize("mode", ["FULL", "EXTRA", "NORMAL"])
def test_sqlite_durability_modes_are_offered(mode: str) -> None:
    args = build_parser().parse_args(["serve", "--sqlite-synchronous", mode])
    assert settings_from_args(args).sqlite_synchronous == mode


@pytest.mark.parametrize("writer", ["process", "thread"])
def test_the_sqlite_writer_can_be_chosen(writer: str, tmp_path: Path) -> None:
    args = build_parser().parse_args(["serve", "--sqlite-writer", writer])
    settings = settings_from_args(args)
    assert settings.sqlite_writer == writer
    store = open_store(replace(settings, database_url=f"sqlite:///{tmp_path}/w.db"))
    assert isinstance(store, SQLiteStore) and store.writer == writer
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--sqlite-writer", "fork"])


def test_an_unknown_sqlite_durability_mode_is_refused() -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["serve", "--sqlite-synchronous", "OFFISH"])
    assert exit_.value.code == 2


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_serve_announces_itself_and_exits_cleanly(
    database_url: str, backend: str, sig: signal.Signals
) -> None:
    server = ServerProcess(["--database-url", database_url]).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            r = http.post("/api/v1/memory/set", json={"key": "k", "data": 1})
            assert r.status_code == 200
            assert http.get("/api/v1/health").json()["storage"] == KIND[backend]
        lines = announced(server)
        assert len(lines) == 1, server.output()
        host, port, storage, where = lines[0].groups()
        assert (host, int(port)) == ("127.0.0.1", server.port)
        assert storage == KIND[backend]
        assert where == database_url
    finally:
        code = server.stop(sig)
    assert code == 0, server.output()
    assert "Traceback" not in server.output()


def test_port_zero_announces_the_bound_port(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            *SERVE,
            "--port",
            "0",
            "--log-level",
            "warning",
            "--database-url",
            f"sqlite:///{tmp_path / 'm.db'}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        match = LISTENING.search(line)
        assert match, line
        port = int(match.group(2))
        assert port > 0
        assert httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=30).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0


def test_database_url_from_the_environment(database_url: str, backend: str) -> None:
    server = ServerProcess([], env={"AGENTFIELD_DATABASE_URL": database_url}).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            assert http.post("/api/v1/memory/set", json={"key": "k", "data": 7}).status_code == 200
            assert http.get("/api/v1/health").json()["storage"] == KIND[backend]
        assert announced(server)[0].group(4) == database_url
    finally:
        assert server.stop() == 0
    if backend == "sqlite":
        assert Path(database_url.removeprefix("sqlite:///")).exists()
    # The flag wins over the variable.
    other = ServerProcess(
        ["--database-url", database_url],
        env={"AGENTFIELD_DATABASE_URL": "sqlite:////nonexistent/dir/x.db"},
    )
    other.start()
    try:
        r = httpx.post(other.url + "/api/v1/memory/get", json={"key": "k"}, timeout=30)
        assert r.json()["data"] == 7
    finally:
        assert other.stop() == 0


def test_workers_are_refused_on_sqlite(tmp_path: Path) -> None:
    result = run_serve(
        "--workers", "2", "--port", "0", "--database-url", f"sqlite:///{tmp_path}/m.db"
    )
    assert result.returncode == 2
    assert "--workers 2 needs PostgreSQL" in result.stderr
    assert "listening" not in result.stderr
    assert not (tmp_path / "m.db").exists()


def test_workers_are_accepted_on_postgresql(pg_cluster: ThrowawayPostgres) -> None:
    server = ServerProcess(["--database-url", pg_cluster.create_database(), "--workers", "2"])
    server.start(timeout=90)
    try:
        assert server.proc is not None
        deadline = time.monotonic() + 60
        while len(children(server.proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(children(server.proc.pid)) >= 2
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for i in range(20):  # spread over the workers by the kernel
                r = http.post(
                    "/api/v1/memory/set",
                    json={"key": f"k{i}", "data": i},
                    headers={"Connection": "close"},
                )
                assert r.status_code == 200
            listed = http.get("/api/v1/memory/list", params={"scope": "global"}).json()
            assert sorted(i["data"] for i in listed) == list(range(20))
    finally:
        assert server.stop() == 0, server.output()


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--workers", "0"], {}, "argument --workers: must be from 1 to 512, not 0"),
        (["--database-url", "mysql://x/y"], {}, "unsupported database URL"),
        (["--database-url", "sqlite://"], {}, "sqlite URL needs a path"),
        ([], {"AGENTFIELD_MAX_VALUE_BYTES": "lots"}, "invalid settings"),
    ],
)
def test_bad_settings_are_refused_with_a_message(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    result = run_serve(
        "--port", "0", *args, env={"AGENTFIELD_DATABASE_URL": f"sqlite:///{tmp_path}/m.db", **env}
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_port_in_use_fails_without_announcing(tmp_path: Path) -> None:
    first = ServerProcess(["--database-url", f"sqlite:///{tmp_path}/a.db"]).start()
    try:
        result = run_serve(
            "--port", str(first.port), "--database-url", f"sqlite:///{tmp_path}/b.db"
        )
        assert result.returncode == 3
        assert "address already in use" in result.stderr
        assert "listening" not in result.stderr
    finally:
        first.stop()


def test_storage_that_cannot_open_exits_3(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = run_serve("--port", "0", "--database-url", f"sqlite:///{blocker}/m.db")
    assert result.returncode == 3
    assert "cannot open storage" in result.stderr
    assert "listening" not in result.stderr
