"""The mistakes a newcomer makes with ``agentfield-asgi serve`` end in one line that says
what to do, before storage is opened; the default log shows only the service's own lines."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from test_cli import LISTENING, SERVE, run_serve

from agentfield_asgi import __version__
from agentfield_asgi.cli import build_parser
from agentfield_asgi.preflight import port_holder, postgres_address, quiet_libraries
from agentfield_asgi.testing import ServerProcess


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "80800"], "argument --port: must be a port from 1 to 65535"),
        (["--port", "-1"], "argument --port: must be a port from 1 to 65535"),
        (["--port", "http"], "argument --port: 'http' is not a whole number"),
        (["--workers", "0"], "argument --workers: must be from 1 to 512, not 0"),
    ],
)
def test_numeric_options_are_range_checked_by_the_parser(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["serve", *args])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("port", ["1", "65535"])
def test_the_ends_of_the_port_range_are_accepted(port: str) -> None:
    assert build_parser().parse_args(["serve", "--port", port]).port == int(port)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_held_port_fails_before_storage_is_opened(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = run_serve("--port", str(port), "--database-url", f"sqlite:///{tmp_path}/m.db")
    assert result.returncode == 3
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(
        f"agentfield-asgi: error: cannot listen on 127.0.0.1:{port}: address already in use "
        f"(held by pid {os.getpid()}: "
    )
    assert not (tmp_path / "m.db").exists()  # storage never opened


def test_a_second_serve_names_the_first(tmp_path: Path) -> None:
    first = ServerProcess(["--database-url", f"sqlite:///{tmp_path}/a.db"]).start()
    try:
        assert first.proc is not None
        result = run_serve(
            "--port", str(first.port), "--database-url", f"sqlite:///{tmp_path}/b.db"
        )
        assert result.returncode == 3
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert f"address already in use (held by pid {first.proc.pid}: " in lines[0]
        assert "-m agentfield_asgi serve" in lines[0]
        assert not (tmp_path / "b.db").exists()
    finally:
        assert first.stop() == 0


def test_the_holder_of_a_port_is_named() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        found = port_holder(holder.getsockname()[1])
    assert found is not None and found.startswith(f"pid {os.getpid()}: ")
    assert "python" in found


def test_an_unreachable_postgresql_is_one_line(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there now
    url = f"postgresql://postgres@127.0.0.1:{port}/memory"
    result = run_serve("--port", "0", "--database-url", url)
    assert result.returncode == 3
    assert result.stderr.strip().splitlines() == [
        f"agentfield-asgi: error: cannot reach PostgreSQL at 127.0.0.1:{port}: connection refused"
    ]
    debug = run_serve("--port", "0", "--database-url", url, "--log-level", "debug")
    assert debug.returncode == 3
    assert "Traceback" in debug.stderr and "ConnectionRefusedError" in debug.stderr


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("postgresql://u:p@db.example:6543/m", ("db.example", 6543)),
        ("postgresql://u@/m", ("localhost", 5432)),
        ("postgresql:///m?host=/var/run/postgresql", None),
        ("postgresql://u@[::1]:5433/m", ("::1", 5433)),
    ],
)
def test_where_a_postgresql_url_points(url: str, address: tuple[str, int] | None) -> None:
    assert postgres_address(url) == address


def test_the_default_log_on_sqlite_holds_only_the_services_lines(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [*SERVE, "--port", "0", "--database-url", f"sqlite:///{tmp_path / 'm.db'}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: list[str] = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            seen.append(line)
            if match := LISTENING.search(line):
                break
        assert match, "".join(seen)
        base = f"http://127.0.0.1:{match.group(2)}/api/v1"
        assert httpx.post(base + "/memory/set", json={"key": "k", "data": 1}).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=60)[1]
    log = "".join(seen) + out
    assert proc.returncode == 0, log
    assert "memory service started on sqlite storage" in log
    assert "schema migration 1" in log  # our own migration line stays
    assert "PostgreSQL" not in log
    assert "Connected to database" not in log and "Disconnected from database" not in log


@pytest.mark.parametrize(("level", "shown"), [("info", False), ("debug", True)])
def test_library_request_lines_only_at_debug(level: str, shown: bool) -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    root = logging.getLogger()
    handler, old_level = Keep(), root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if shown else logging.INFO)
    try:
        quiet_libraries(level)
        logging.getLogger("httpx").info('HTTP Request: POST http://x "HTTP/1.1 200 OK"')
        logging.getLogger("databases").info("Connected to database sqlite:///m.db")
        logging.getLogger("agentfield_asgi.server").info("memory service started")
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        quiet_libraries("debug")  # back to inheriting the root's level
    names = [r.name for r in records]
    assert "agentfield_asgi.server" in names
    assert ("httpx" in names, "databases" in names) == (shown, shown)


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version(flag: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agentfield_asgi", flag], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    assert result.stdout == f"agentfield-asgi {__version__}\n"


def test_top_level_help_opens_with_a_sentence_for_users(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    help_text = capsys.readouterr().out
    description = help_text.split("\n\n")[1]
    assert description.startswith("Shared, scoped, persistent memory for multi-agent systems")
    assert "``" not in help_text
    assert "agentfield-asgi serve" in description
