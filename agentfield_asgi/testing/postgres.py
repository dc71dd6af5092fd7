"""A throwaway PostgreSQL cluster in a temporary directory, on a loopback port."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from .servers import free_port


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL binaries, or the cluster would not start."""


def find_bindir() -> Path:
    """The newest ``/usr/lib/postgresql/*/bin`` (Debian), else ``pg_ctl`` on PATH."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    if candidates:
        return Path(candidates[-1]).parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    raise PostgresUnavailable(
        "PostgreSQL binaries not found (install Debian's 'postgresql' package)"
    )


class ThrowawayPostgres:
    """``initdb`` + ``pg_ctl start`` in a temp dir; :meth:`stop` removes everything.

    ``durable=False`` turns fsync off (fine for tests that do not crash the cluster).
    ``bindir`` picks other PostgreSQL binaries (e.g. the ``pgserver`` wheel's, which has pgvector).
    As root, the cluster runs as the ``postgres`` user (``initdb`` refuses root).
    """

    def __init__(
        self, *, durable: bool = False, port: int | None = None, bindir: Path | None = None
    ) -> None:
        self.bindir = bindir or find_bindir()
        self.port = port or free_port()
        self.durable = durable
        self.root = Path(tempfile.mkdtemp(prefix="agentfield-pg-"))
        self.datadir = self.root / "data"
        self.running = False

    @property
    def url(self) -> str:
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            raise PostgresUnavailable(
                f"{args[0]} failed: {result.stderr.strip() or result.stdout.strip()}"
            )
        return result

    def start(self) -> ThrowawayPostgres:
        if not self.datadir.exists():
            self.datadir.mkdir(parents=True)
            if os.geteuid() == 0:
                shutil.chown(self.root, "postgres", "postgres")
                shutil.chown(self.datadir, "postgres", "postgres")
            args = [
                "initdb",
                "-D",
                str(self.datadir),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
            ]
            if not self.durable:
                args.append("--no-sync")
            self._run(*args)
        options = f"-p {self.port} -k {self.root} -h 127.0.0.1 -c max_connections=300"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run(
            "pg_ctl",
            "-D",
            str(self.datadir),
            "-o",
            options,
            "-l",
            str(self.root / "log"),
            "-w",
            "start",
        )
        self.running = True
        return self

    def stop(self, mode: str = "fast") -> None:
        if self.running:
            self._run("pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "stop", check=False)
            self.running = False

    def restart(self) -> None:
        self.stop()
        self.start()

    def create_database(self, name: str | None = None) -> str:
        """A fresh empty database; returns its URL."""
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        self._run(
            "psql",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-c",
            f"CREATE DATABASE {name}",
        )
        return self.url_for(name)

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> ThrowawayPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.destroy()
