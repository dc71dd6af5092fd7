"""The memory service (or any app) served by uvicorn in a subprocess on loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import httpx


def rss_kib(pid: int) -> int:
    """Resident set size of a process (Linux), in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def sqlite_writer_pids(db_path: str) -> list[int]:
    """The SQLite writer processes serving ``db_path`` (found by their command line)."""
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(os.path.join(entry.path, "cmdline"), "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"agentfield_asgi.store.sqlite.writer_process" in argv and db_path.encode() in argv:
            pids.append(int(entry.name))
    return pids


def asgi_client(app: Any, base_url: str = "http://memory") -> httpx.AsyncClient:
    """An httpx client for an ASGI app (or a service: its ``.app``) in this process, no
    socket."""
    app = getattr(app, "app", app)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """``agentfield-asgi serve`` (or ``uvicorn APP``) in a subprocess; waits until it answers.

    ``args`` are extra ``serve`` arguments; ``app`` serves ``module:attr`` via uvicorn instead.
    """

    def __init__(
        self,
        args: Sequence[str] = (),
        *,
        app: str | None = None,
        port: int | None = None,
        env: dict[str, str] | None = None,
        ready_path: str = "/api/v1/health",
        cwd: str | None = None,
    ) -> None:
        self.port = port or free_port()
        self.args = list(args)
        self.app = app
        self.env = env
        self.ready_path = ready_path
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        options = ["--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"]
        if self.app:
            return [sys.executable, "-m", "uvicorn", self.app, *options]
        # Extra arguments last, so they may override the defaults above.
        return [sys.executable, "-m", "agentfield_asgi", "serve", *options, *self.args]

    def start(self, timeout: float = 30.0) -> ServerProcess:
        env = {**os.environ, **(self.env or {})}
        import tempfile

        log = tempfile.NamedTemporaryFile(prefix="agentfield-server-", suffix=".log", delete=False)
        self.log_path = log.name
        self.proc = subprocess.Popen(
            self.command(), env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.cwd
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(self.url + self.ready_path, timeout=1.0).status_code < 500:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server did not become ready in {timeout}s:\n{self.output()}")

    def output(self) -> str:
        if not self.log_path:
            return ""
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code

    def kill(self) -> None:
        """SIGKILL: no shutdown at all, as in a crash."""
        self.stop(signal.SIGKILL)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def agent_server(
    app: str,
    control_plane_url: str | None = None,
    *,
    prefix: str = "",
    env: dict[str, str] | None = None,
    cwd: str | None = None,
) -> ServerProcess:
    """An agent node (``module:attr``) served by uvicorn on a free loopback port, told where
    the control plane is and its own public URL (``prefix``: where the agent is mounted)."""
    port = free_port()
    node_env = {"AGENTFIELD_PUBLIC_URL": f"http://127.0.0.1:{port}{prefix}", **(env or {})}
    if control_plane_url:
        node_env["AGENTFIELD_CONTROL_PLANE_URL"] = control_plane_url
    return ServerProcess(app=app, port=port, env=node_env, ready_path=f"{prefix}/health", cwd=cwd)
